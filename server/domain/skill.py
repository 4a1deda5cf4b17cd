"""The skill file an agent reads to learn how to use this deployment, from the live configuration."""

from __future__ import annotations

from decimal import Decimal

from server.domain.catalog import Catalog
from server.domain.payments.topup import TopUpPolicy


def render_skill(public_url: str, catalog: Catalog, top_ups: TopUpPolicy) -> str:
    """Markdown: where the API is, how to register, how to pay with x402, and what models cost."""
    base = public_url.rstrip("/")
    credits = top_ups.credits_per_usd
    lines = [
        "# CrossCompute API: skill file for autonomous agents",
        "",
        f"Base URL: `{base}`. The inference API is OpenAI-compatible at `{base}/v1`.",
        "",
        "## 1. Register (no human needed)",
        "",
        f"`POST {base}/api/agents/register` with "
        '`{"agentId": "your-id", "name": "...", "skillMdUrl": "..."}`.',
        "The first call answers 201 with `apiKey` (`cc_agent_...`), shown once: keep it secret.",
        "Send it as `Authorization: Bearer cc_agent_...` on every other call.",
        "",
        "## 2. Buy credits with x402",
        "",
    ]
    if top_ups.enabled:
        lines += [
            f"- Check `GET {base}/health`: `paymentChannels.x402.enabled` is true here.",
            f'- `POST {base}/api/agents/topup` with `{{"amountUsd": "{top_ups.default_usd}"}}` '
            f"(from {top_ups.min_usd} to {top_ups.max_usd} USD) answers 402 with an x402 challenge "
            "(v1 body, v2 `PAYMENT-REQUIRED` header).",
            f"- Pay with scheme `exact` on `{top_ups.network}` in `{top_ups.asset}` ({top_ups.token_name}) "
            f"to `{top_ups.pay_to}`: retry the same request with `PAYMENT-SIGNATURE` (v2) "
            "or `X-PAYMENT` (v1).",
            "- 200 answers `topup{id, amountUsd, credits, txHash, network, payer}`. "
            f"1 USD buys {credits:f} credits.",
            "- Retrying the same payment never credits twice.",
        ]
    else:
        lines.append("x402 top-ups are not enabled on this deployment.")
    lines += [
        "",
        "## 3. Call models",
        "",
        f"`POST {base}/v1/chat/completions` with any OpenAI client; "
        f"`GET {base}/v1/models` lists what is available.",
        f"Follow your spending with `GET {base}/api/agents/usage` and `GET {base}/api/agents/usage-models`.",
        "Not enough credits is HTTP 402 with code `insufficient_credits`.",
        "",
        "| model | credits per million input tokens | credits per million output tokens |",
        "|---|---|---|",
    ]
    for entry in catalog.list():
        if entry.spec is None:
            continue
        prices = entry.spec.prices
        lines.append(
            f"| `{entry.id}` | {_amount(prices.input * credits)} | {_amount(prices.output * credits)} |"
        )
    return "\n".join(lines) + "\n"


def _amount(value: Decimal) -> str:
    return f"{value.normalize():f}"
