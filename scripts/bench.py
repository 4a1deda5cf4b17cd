"""`make bench`: what the gateway costs per request, measured on this machine in one run.

It starts a fast local stand-in provider, the gateway (one server replica and Envoy, on PostgreSQL,
with a real key, billing and routing), and drives both with the same closed-loop load at several
concurrency levels, plain and streamed: requests/s, p50/p99 latency and time to first byte, and the
gateway's CPU time per request and memory (all its processes, Envoy included). It writes
docs/benchmarks.md. LiteLLM's side of the comparison is not built yet (see the routing/load issue).

    DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test make bench
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
from psycopg import sql

from scripts.replicas import running
from tests.support.fake_provider import FakeProvider

ROOT = Path(__file__).resolve().parent.parent
ADMIN_URL = os.environ.get("CROSSCOMPUTE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
SECONDS_PER_POINT = float(os.environ.get("CROSSCOMPUTE_BENCH_SECONDS", "5"))
CONCURRENCY = (1, 16, 64)
ADMIN_TOKEN = f"bench-{uuid.uuid4().hex}"
BODY = {"model": "openai/gpt-5-mini", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5}


@dataclass
class Point:
    """One measured point."""

    target: str
    mode: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    ttfb_p50_ms: float
    cpu_us_per_request: float | None = None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def process_cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks
    return total / os.sysconf("SC_CLK_TCK")


def process_rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


async def load(
    url: str, headers: dict[str, str], stream: bool, concurrency: int
) -> tuple[list[float], list[float], int]:
    latencies: list[float] = []
    ttfbs: list[float] = []
    errors = 0
    deadline = time.perf_counter() + SECONDS_PER_POINT
    body = {**BODY, "stream": stream}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    async with client.stream("POST", url, json=body, headers=headers) as response:
                        first = None
                        async for _chunk in response.aiter_raw():
                            first = first or time.perf_counter()
                        if response.status_code != 200:
                            errors += 1
                            continue
                except httpx.HTTPError:
                    errors += 1
                    continue
                ended = time.perf_counter()
                latencies.append((ended - started) * 1000)
                ttfbs.append(((first or ended) - started) * 1000)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, ttfbs, errors


def measure(target: str, url: str, headers: dict[str, str], pids: list[int]) -> list[Point]:
    points = []
    for stream in (False, True):
        for concurrency in CONCURRENCY:
            cpu_before = process_cpu_seconds(pids) if pids else 0.0
            started = time.perf_counter()
            latencies, ttfbs, errors = asyncio.run(load(url, headers, stream, concurrency))
            seconds = time.perf_counter() - started
            latencies.sort()
            cpu = (process_cpu_seconds(pids) - cpu_before) / max(len(latencies), 1) * 1e6 if pids else None
            points.append(
                Point(
                    target=target,
                    mode="stream" if stream else "plain",
                    concurrency=concurrency,
                    requests=len(latencies),
                    errors=errors,
                    seconds=seconds,
                    p50_ms=statistics.median(latencies) if latencies else float("nan"),
                    p99_ms=latencies[int(len(latencies) * 0.99) - 1] if latencies else float("nan"),
                    ttfb_p50_ms=statistics.median(ttfbs) if ttfbs else float("nan"),
                    cpu_us_per_request=cpu,
                )
            )
            print(
                f"{target:8} {points[-1].mode:6} c={concurrency:<3} {points[-1].rps:8.1f} req/s "
                f"p50 {points[-1].p50_ms:7.2f} ms p99 {points[-1].p99_ms:7.2f} ms errors {errors}",
                flush=True,
            )
    return points


def main() -> None:
    database = f"cc_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    try:
        with FakeProvider().running() as fake:
            direct = measure("provider", f"{fake.url}/v1/chat/completions", {}, [])
            environ = {
                **{
                    k: v for k, v in os.environ.items() if not k.startswith(("CROSSCOMPUTE_", "DATABASE_URL"))
                },
                "DATABASE_URL": ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
                + f"/{database}",
                "OPENAI_API_KEY": "sk-bench",
                "OPENAI_BASE_URL": f"{fake.url}/v1",
                "CROSSCOMPUTE_LOG_LEVEL": "WARNING",
                "CROSSCOMPUTE_ADMIN_TOKEN": ADMIN_TOKEN,
            }
            with running(1, environ) as replicas, httpx.Client(timeout=30) as http:
                assert replicas.edge is not None and replicas.envoy is not None
                base = f"http://127.0.0.1:{replicas.edge.http}"
                registered = http.post(
                    f"{base}/api/agents/register", json={"agentId": f"bench-{uuid.uuid4().hex[:6]}"}
                ).json()
                key = registered["apiKey"]
                # Agents start with no credits: give this one plenty through the admin RPC.
                grant(replicas.ports[0], registered["account"]["id"])
                pids = [process.pid for process in replicas.processes] + [replicas.envoy.pid]
                gateway = measure(
                    "gateway", f"{base}/v1/chat/completions", {"authorization": f"Bearer {key}"}, pids
                )
                rss = process_rss_mib(pids)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
    write_report(direct, gateway, rss)


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


def write_report(direct: list[Point], gateway: list[Point], rss_mib: float) -> None:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    lines = [
        "# Benchmarks",
        "",
        f"Measured by `make bench` at commit `{commit}` on this project's 2-core machine, in one run:",
        "a closed loop of N concurrent clients for "
        f"{SECONDS_PER_POINT:.0f} s per point, against (a) the local stand-in provider directly and (b) the",
        "gateway (one server replica and Envoy on PostgreSQL, a real agent key, billing and routing)",
        "in front of it.",
        "LiteLLM's column is not measured yet.",
        "",
        "| target | mode | concurrency | req/s | p50 ms | p99 ms | TTFB p50 ms | errors | CPU µs/request |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for point in [*direct, *gateway]:
        cpu = f"{point.cpu_us_per_request:.0f}" if point.cpu_us_per_request is not None else "—"
        lines.append(
            f"| {point.target} | {point.mode} | {point.concurrency} | {point.rps:.1f} | {point.p50_ms:.2f} | "
            f"{point.p99_ms:.2f} | {point.ttfb_p50_ms:.2f} | {point.errors} | {cpu} |"
        )
    lines += ["", f"Gateway memory (server and Envoy, RSS after the run): {rss_mib:.0f} MiB.", ""]
    (ROOT / "docs" / "benchmarks.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
