"""Measuring one target point by point, for `make bench` (scripts/bench.py).

Every point is one run of the load generator in its own process (`loadgen.run_load_process`), so its
CPU is charged to no target. For each target it first warms up (unrecorded, plain and streamed),
then runs concurrency 1, 16 and 64, plain and streamed (`stream_options.include_usage`), and reads
the target's CPU time (utime + stime of all its processes, from /proc) before and after each point,
and its total RSS at the end.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from scripts.benchkit.loadgen import LoadSummary, run_load_process

CONCURRENCY = (1, 16, 64)
MESSAGES = [{"role": "user", "content": "Hi"}]
EXPECT = {"plain": b'"choices"', "stream": b"data: [DONE]"}


def bodies(model: str) -> dict[str, bytes]:
    """The same plain and streamed requests for every target (only the model name differs)."""
    plain = {"model": model, "messages": MESSAGES, "max_tokens": 5}
    stream = {**plain, "stream": True, "stream_options": {"include_usage": True}}
    return {"plain": json.dumps(plain).encode(), "stream": json.dumps(stream).encode()}


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
    requests: dict[str, bytes],
) -> list[Point]:
    """Warm-up, then every (mode, concurrency) point against one target (`requests`: the plain and
    the streamed body, by mode)."""
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
