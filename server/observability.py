"""Prometheus metrics: what the gateway serves, what providers do, what is billed and how routing
decides. Served on a separate port (`CROSSCOMPUTE_METRICS_PORT`, 127.0.0.1) that Envoy never exposes."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

REQUESTS = Counter(
    "crosscompute_requests_total", "gRPC calls served, by method and status.", ["method", "code"]
)
LATENCY = Histogram(
    "crosscompute_request_seconds",
    "gRPC call latency, by method (streams: until the last chunk).",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
UPSTREAM_ERRORS = Counter(
    "crosscompute_upstream_errors_total",
    "Provider call failures, by provider and kind.",
    ["provider", "kind"],
)
TOKENS = Counter(
    "crosscompute_tokens_total", "Tokens billed, by model and direction.", ["model", "direction"]
)
CREDITS = Counter("crosscompute_billed_micro_credits_total", "Micro-credits billed, by model.", ["model"])
UNBILLED = Counter(
    "crosscompute_unbilled_micro_credits_total",
    "Micro-credits providers' reported usage cost beyond what the hold, key quota and balance covered.",
    ["model"],
)
PAYMENTS = Counter(
    "crosscompute_x402_payments_total",
    "x402 payments reaching a state: settled, failed, expired, or unknown (outcome not seen).",
    ["state"],
)
ROUTING = Counter(
    "crosscompute_routing_decisions_total",
    "Profile routing decisions, by profile, tier, budget and intelligence.",
    ["profile", "tier", "budget", "intelligence"],
)
FALLBACKS = Counter(
    "crosscompute_fallbacks_total", "Attempts that handed over to the next candidate.", ["model"]
)
COOLDOWNS = Counter(
    "crosscompute_cooldowns_total", "Models put to rest, by model and reason.", ["model", "reason"]
)


def serve_metrics(port: int, address: str = "127.0.0.1") -> None:
    """Expose /metrics on `address:port` (a daemon thread)."""
    start_http_server(port, addr=address)
