"""Measures the stand-in provider directly and LiteLLM's proxy (1 and 2 workers) in front of it.

Every point is one run of the load generator in its own process (`loadgen.run_load_process`), so its
CPU is charged to neither target. For each target it first warms up (unrecorded, plain and streamed),
then runs concurrency 1, 16 and 64, plain and streamed (`stream_options.include_usage`), and reads
the target's CPU time (utime + stime of all its processes, from /proc) before and after each point,
and its total RSS at the end. Prints a Markdown table (and, with `--json PATH`, writes every point).

    python -m scripts.benchkit.matrix --seconds 5 --workers 1 2
"""

from __future__ import annotations

import argparse
import functools
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from scripts.benchkit.litellm_proxy import MODEL, running_litellm
from scripts.benchkit.loadgen import LoadSummary, run_load_process
from scripts.benchkit.provider import running_provider

CONCURRENCY = (1, 16, 64)
MESSAGES = [{"role": "user", "content": "Hi"}]
PLAIN = json.dumps({"model": MODEL, "messages": MESSAGES, "max_tokens": 5}).encode()
STREAM = json.dumps(
    {
        "model": MODEL,
        "messages": MESSAGES,
        "max_tokens": 5,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
).encode()
EXPECT = {"plain": b'"choices"', "stream": b"data: [DONE]"}


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the live processes among `pids`, in seconds."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_mib(pids: list[int]) -> float:
    """Total VmRSS of the live processes among `pids`, in MiB (shared pages counted once per process)."""
    kib = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                kib += int(line.split()[1])
    return kib / 1024


@dataclass
class Point:
    """One measured point."""

    target: str
    mode: str
    concurrency: int
    summary: LoadSummary
    cpu_us_per_request: float
    rss_mib: float = 0.0


def measure(
    target: str,
    url: str,
    headers: dict[str, str],
    pids: Callable[[], list[int]],
    seconds: float,
    warmup: float,
    bodies: dict[str, bytes] | None = None,
) -> list[Point]:
    """Warm-up, then every (mode, concurrency) point against one target (`bodies`: the plain and
    the streamed request, by mode)."""
    requests = bodies or {"plain": PLAIN, "stream": STREAM}
    for body in requests.values():
        run_load_process(url, body, headers, 16, warmup)
    points: list[Point] = []
    for mode, body in requests.items():
        for concurrency in CONCURRENCY:
            processes = pids()
            before = cpu_seconds(processes)
            summary = run_load_process(url, body, headers, concurrency, seconds, expect=EXPECT[mode])
            cpu = cpu_seconds(processes) - before
            point = Point(target, mode, concurrency, summary, cpu / max(summary.count, 1) * 1e6)
            points.append(point)
            print(row(point), flush=True)
    rss = rss_mib(pids())
    for point in points:
        point.rss_mib = rss
    return points


def row(point: Point) -> str:
    s = point.summary
    return (
        f"| {point.target} | {point.mode} | {point.concurrency} | {s.rps:,.0f} | {s.p50_ms:.2f} "
        f"| {s.p99_ms:.2f} | {s.ttfb_p50_ms:.2f} | {s.errors} | {point.cpu_us_per_request:,.0f} "
        f"| {point.rss_mib:,.0f} |"
    )


HEADER = (
    "| target | mode | c | req/s | p50 ms | p99 ms | TTFB p50 ms | errors | CPU µs/req | RSS MiB |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2], help="LiteLLM worker counts")
    parser.add_argument("--json", type=Path, help="write every point here")
    args = parser.parse_args(argv)
    print(HEADER, flush=True)
    points: list[Point] = []
    with running_provider() as (provider_url, provider):
        points += measure(
            "provider",
            f"{provider_url}/v1/chat/completions",
            {},
            lambda: [provider.pid],
            args.seconds,
            args.warmup,
        )
        for workers in args.workers:
            with running_litellm(provider_url, workers) as litellm:
                pids = litellm.pids  # the worker set is fixed once every worker is ready
                points += measure(
                    f"LiteLLM {workers}w",
                    f"{litellm.url}/v1/chat/completions",
                    litellm.headers,
                    functools.partial(list, pids),
                    args.seconds,
                    args.warmup,
                )
    print("\n" + HEADER)
    for point in points:
        print(row(point))
    if args.json:
        args.json.write_text(json.dumps([asdict(point) for point in points], indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
