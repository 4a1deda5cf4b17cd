"""`make bench`: what the gateway costs per request beside LiteLLM, measured on this machine in one run.

It starts a fast stand-in provider (`scripts.benchkit.provider`, its own process) and measures, for
plain and streamed chat completions at concurrency 1, 16 and 64:
(a) the provider called directly;
(b) this gateway: N server replicas (default 2, one per core) behind one Envoy, on PostgreSQL, with a
    real agent key, billing (hold and settle in the database) and routing (`model: "auto"`);
(f) the architecture's floor: the gateway's own Envoy in front of a grpc.aio server that answers at
    once (`scripts.benchkit.floor_server`: no key, database, routing or provider call), which is
    what any gateway built this way pays before doing any work;
(c) LiteLLM's proxy (`litellm[proxy]` in `.bench/litellm-venv`, created on first use) with its master
    key and no database (its database mode cannot start offline), with its best worker count here (2).
Every point runs the load generator (`scripts.benchkit.loadgen`) in its own process, so its CPU is
charged to no target; CPU per request is utime + stime of all the target's processes (Envoy
included) over the point, memory the RSS of all of them after the run. It writes docs/benchmarks.md
(method, table, ratios against the issue's targets, the commit) and docs/benchmarks.png.

    make bench          # CROSSCOMPUTE_BENCH_SECONDS, _REPLICAS, _LITELLM_WORKERS tune it
"""

from __future__ import annotations

import dataclasses
import functools
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
from psycopg import sql

from scripts.benchkit.floor_server import running_floor
from scripts.benchkit.litellm_proxy import LITELLM_VERSION, MODEL, running_litellm
from scripts.benchkit.matrix import CONCURRENCY, Point, bodies, measure
from scripts.benchkit.provider import running_provider
from scripts.replicas import running

ROOT = Path(__file__).resolve().parent.parent
ADMIN_URL = os.environ.get("CROSSCOMPUTE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
SECONDS = float(os.environ.get("CROSSCOMPUTE_BENCH_SECONDS", "5"))
WARMUP = float(os.environ.get("CROSSCOMPUTE_BENCH_WARMUP", "2"))
REPLICAS = int(os.environ.get("CROSSCOMPUTE_BENCH_REPLICAS", "2"))
LITELLM_WORKERS = int(os.environ.get("CROSSCOMPUTE_BENCH_LITELLM_WORKERS", "2"))
ADMIN_TOKEN = f"bench-{uuid.uuid4().hex}"


@contextmanager
def bench_database() -> Iterator[str]:
    """A fresh PostgreSQL database for the gateway, dropped afterwards; yields its URL."""
    name = f"cc_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        base = ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def grant(grpc_port: int, account_id: str) -> None:
    """Give the benchmark's agent plenty of credits through the gRPC-only AdminService."""
    import grpc
    from crosscompute.v1 import admin_service_pb2 as pb
    from crosscompute.v1 import admin_service_pb2_grpc as pb_grpc

    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        pb_grpc.AdminServiceStub(channel).GrantCredits(
            pb.GrantCreditsRequest(
                account_id=account_id, amount_micro_credits=10**15, idempotency_key=f"bench:{uuid.uuid4()}"
            ),
            metadata=(("x-crosscompute-admin-token", ADMIN_TOKEN),),
        )


def measure_gateway(provider_url: str) -> list[Point]:
    with bench_database() as database_url:
        environ = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("CROSSCOMPUTE_", "DATABASE_URL"))},
            "DATABASE_URL": database_url,
            "OPENAI_API_KEY": "sk-bench",
            "OPENAI_BASE_URL": f"{provider_url}/v1",
            "CROSSCOMPUTE_LOG_LEVEL": "WARNING",
            "CROSSCOMPUTE_ADMIN_TOKEN": ADMIN_TOKEN,
        }
        with running(REPLICAS, environ) as replicas, httpx.Client(timeout=30) as http:
            assert replicas.edge is not None and replicas.envoy is not None
            base = f"http://127.0.0.1:{replicas.edge.http}"
            registered = http.post(
                f"{base}/api/agents/register", json={"agentId": f"bench-{uuid.uuid4().hex[:6]}"}
            ).json()
            grant(replicas.ports[0], registered["account"]["id"])
            pids = [process.pid for process in replicas.processes] + [replicas.envoy.pid]
            return measure(
                f"gateway ({REPLICAS} replicas)",
                f"{base}/v1/chat/completions",
                {"authorization": f"Bearer {registered['apiKey']}"},
                functools.partial(list, pids),
                SECONDS,
                WARMUP,
                bodies("auto"),
            )


def main() -> None:
    with running_provider() as (provider_url, provider):
        direct = measure(
            "provider",
            f"{provider_url}/v1/chat/completions",
            {},
            lambda: [provider.pid],
            SECONDS,
            WARMUP,
            bodies(MODEL),
        )
        with running_floor() as (floor_url, floor_pids):
            floor = measure(
                "floor (Envoy + empty gRPC server)",
                f"{floor_url}/v1/chat/completions",
                {},
                functools.partial(list, floor_pids),
                SECONDS,
                WARMUP,
                bodies(MODEL),
            )
        gateway = measure_gateway(provider_url)
        with running_litellm(provider_url, LITELLM_WORKERS) as litellm:
            pids = litellm.pids
            litellm_points = measure(
                f"LiteLLM ({LITELLM_WORKERS} workers)",
                f"{litellm.url}/v1/chat/completions",
                litellm.headers,
                functools.partial(list, pids),
                SECONDS,
                WARMUP,
                bodies(litellm.model),
            )
    report = Report(direct, floor, gateway, litellm_points)
    (ROOT / "docs").mkdir(exist_ok=True)
    (ROOT / "docs" / "benchmarks.md").write_text(report.markdown())
    report.plot(ROOT / "docs" / "benchmarks.png")
    print(report.markdown())


@dataclasses.dataclass
class Report:
    """The three targets' points, and what they say against the issue's targets."""

    direct: list[Point]
    floor: list[Point]
    gateway: list[Point]
    litellm: list[Point]

    @staticmethod
    def at(points: list[Point], mode: str, concurrency: int) -> Point:
        return next(p for p in points if p.mode == mode and p.concurrency == concurrency)

    def added(self, points: list[Point], mode: str, concurrency: int, field: str) -> float:
        """Latency a proxy adds over the provider at one point (ms)."""
        base = getattr(self.at(self.direct, mode, concurrency).summary, field)
        return float(getattr(self.at(points, mode, concurrency).summary, field)) - float(base)

    def measures(self, points: list[Point], mode: str) -> dict[str, float]:
        """One target's numbers for the targets' comparisons."""
        return {
            "p50": self.added(points, mode, 1, "p50_ms"),
            "p99": self.added(points, mode, 1, "p99_ms"),
            "rps": self.at(points, mode, 64).summary.rps,
            "cpu": mean([p.cpu_us_per_request for p in points if p.mode == mode]),
            "rss": points[0].rss_mib,
        }

    def checks(self, mode: str) -> list[str]:
        """Markdown rows: what, floor, gateway, LiteLLM, ratio, whether the issue's target is met."""
        floor, ours, theirs = (self.measures(p, mode) for p in (self.floor, self.gateway, self.litellm))
        targets = (
            ("p50", "added latency p50 at c=1, ms (target: under 1/15 of LiteLLM's)", 15, "{:.2f}"),
            ("p99", "added latency p99 at c=1, ms (target: under 1/10)", 10, "{:.2f}"),
            ("cpu", "CPU per request, mean over c, µs (target: at most 1/20)", 20, "{:,.0f}"),
            ("rss", "memory, RSS of all processes, MiB (target: at most 1/2)", 2, "{:,.0f}"),
        )
        rows = []
        for key, what, factor, shape in targets:
            ratio = f"1/{theirs[key] / ours[key]:.1f}" if ours[key] > 0 else "—"
            met = ours[key] * factor <= theirs[key]
            rows.append(
                f"| {what} | {shape.format(floor[key])} | {shape.format(ours[key])} "
                f"| {shape.format(theirs[key])} | {ratio} | {'yes' if met else 'no'} |"
            )
        times = ours["rps"] / theirs["rps"]
        rows.insert(
            2,
            f"| requests/s at c=64 (target: at least 10 times LiteLLM's) | {floor['rps']:,.0f} "
            f"| {ours['rps']:,.0f} | {theirs['rps']:,.0f} | {times:.1f} times "
            f"| {'yes' if times >= 10 else 'no'} |",
        )
        return rows

    def markdown(self) -> str:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip()
        lines = [
            "# Benchmarks",
            "",
            f"Measured by `make bench` at commit `{commit}`{' (with uncommitted changes)' if dirty else ''} "
            "on this project's 2-core machine, all in one run, so the ratios are fair on a noisy machine.",
            "",
            "Method: a closed loop of N clients on keep-alive connections "
            f"({SECONDS:.0f} s per point after a {WARMUP:.0f} s warm-up), driven by "
            "`scripts/benchkit/loadgen.py` in its own process; every target sits in front of the same "
            "stand-in provider (`scripts/benchkit/provider.py`, its own process, ~20 µs of CPU per answer). "
            "The same body for all: "
            "one short user message, `max_tokens: 5`; streamed requests ask for "
            "`stream_options.include_usage`. TTFB is the time to the first byte of the body.",
            "",
            "- **provider**: the stand-in called directly.",
            "- **floor**: the gateway's own Envoy configuration in front of a grpc.aio server that answers "
            "at once with a canned completion (`scripts/benchkit/floor_server.py`): what the fixed "
            "architecture costs before any work (no key, database, routing or provider call).",
            f"- **gateway**: {REPLICAS} server replicas behind one Envoy on PostgreSQL: a real agent key, "
            'a hold and a settlement in the database per request, routing with `model: "auto"`. CPU '
            "and memory count every replica and Envoy.",
            f"- **LiteLLM**: `litellm[proxy]` {LITELLM_VERSION} with {LITELLM_WORKERS} workers "
            "(its best here), its master key, no database (its database mode cannot start offline: "
            "Prisma downloads its engines). CPU and memory count all its processes.",
            "",
            "| target | mode | concurrency | req/s | p50 ms | p99 ms | TTFB p50 ms | errors "
            "| CPU µs/request | RSS MiB |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for point in [*self.direct, *self.floor, *self.gateway, *self.litellm]:
            s = point.summary
            lines.append(
                f"| {point.target} | {point.mode} | {point.concurrency} | {s.rps:,.0f} | {s.p50_ms:.2f} "
                f"| {s.p99_ms:.2f} | {s.ttfb_p50_ms:.2f} | {s.errors} | {point.cpu_us_per_request:,.0f} "
                f"| {point.rss_mib:,.0f} |"
            )
        for mode in ("plain", "stream"):
            lines += [
                "",
                f"## Against the targets ({mode})",
                "",
                "| measure | floor | gateway | LiteLLM | gateway / LiteLLM | target met |",
                "|---|---|---|---|---|---|",
                *self.checks(mode),
            ]
        lines += ["", "![Latency and throughput](benchmarks.png)", ""]
        return "\n".join(lines)

    def plot(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(3, 2, figsize=(11, 10.5))
        targets = (
            (self.direct, "provider"),
            (self.floor, "floor (Envoy + empty gRPC)"),
            (self.gateway, "gateway"),
            (self.litellm, "LiteLLM"),
        )
        panels: tuple[tuple[str, Callable[[Point], float]], ...] = (
            ("p50 latency, ms", lambda p: p.summary.p50_ms),
            ("requests/s", lambda p: p.summary.rps),
            ("CPU per request, µs", lambda p: p.cpu_us_per_request),
        )
        for column, mode in enumerate(("plain", "stream")):
            for row, (title, value) in enumerate(panels):
                axis = axes[row][column]
                for points, label in targets:
                    selected = [p for p in points if p.mode == mode]
                    axis.plot(
                        [p.concurrency for p in selected],
                        [value(p) for p in selected],
                        marker="o",
                        label=label,
                    )
                axis.set_title(f"{mode}: {title} (log)")
                axis.set_xscale("log", base=2)
                axis.set_yscale("log")
                axis.set_xticks(CONCURRENCY, [str(c) for c in CONCURRENCY])
                axis.set_xlabel("concurrent clients")
                axis.grid(True, which="both", alpha=0.3)
                axis.legend(fontsize="small")
        figure.suptitle("CrossCompute gateway vs LiteLLM proxy, same stand-in provider, 2 cores")
        figure.tight_layout()
        figure.savefig(path, dpi=110)
        plt.close(figure)


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


if __name__ == "__main__":
    main()
