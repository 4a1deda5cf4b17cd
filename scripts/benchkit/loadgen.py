"""A low-overhead closed-loop HTTP/1.1 load generator for benchmarks (library and CLI).

Each of `concurrency` workers owns one keep-alive connection and sends the same request again as soon
as the previous response is complete, until `seconds` have passed (requests in flight then finish
and are counted). It is a bare asyncio `Protocol` (uvloop when installed) that parses the status line,
headers and a Content-Length, chunked or connection-delimited body by hand, so one core drives well
over 5,000 requests/s.

Per request it records the latency (request written to last body byte) and the time to first byte:
from writing the request to receiving the first byte of the response *body* (for an SSE stream, the
first event's bytes, after the chunk-size line). Errors are non-2xx statuses, connection failures,
time-outs, and (with `expect`) 2xx bodies that lack the expected bytes, e.g. `data: [DONE]`.

Library:

    result = await run_load(url, body, headers, concurrency=16, seconds=5)
    summary = run_load_process(url, body, headers, concurrency=16, seconds=5)  # in its own process

CLI (prints one JSON line on stdout; `--raw` adds every latency):

    python -m scripts.benchkit.loadgen http://127.0.0.1:8080/v1/chat/completions \\
        --concurrency 16 --seconds 5 --body body.json --header 'authorization: Bearer sk-...'
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from scripts.benchkit import install_uvloop

_perf = time.perf_counter


def percentile(sorted_values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values (NaN when there are none)."""
    if not sorted_values:
        return math.nan
    rank = max(math.ceil(fraction * len(sorted_values)), 1)
    return sorted_values[rank - 1]


@dataclass
class LoadResult:
    """What one run measured; latencies and TTFBs in milliseconds, in completion order."""

    latencies_ms: list[float] = field(default_factory=list)
    ttfb_ms: list[float] = field(default_factory=list)
    errors: int = 0
    completed: int = 0
    wall_seconds: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)

    @property
    def rps(self) -> float:
        """Successful requests per second of wall time."""
        return self.completed / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def summary(self) -> LoadSummary:
        latencies = sorted(self.latencies_ms)
        ttfbs = sorted(self.ttfb_ms)
        return LoadSummary(
            count=self.completed,
            errors=self.errors,
            seconds=self.wall_seconds,
            rps=self.rps,
            p50_ms=percentile(latencies, 0.50),
            p90_ms=percentile(latencies, 0.90),
            p99_ms=percentile(latencies, 0.99),
            max_ms=latencies[-1] if latencies else math.nan,
            mean_ms=sum(latencies) / len(latencies) if latencies else math.nan,
            ttfb_p50_ms=percentile(ttfbs, 0.50),
            ttfb_p99_ms=percentile(ttfbs, 0.99),
            statuses={str(status): count for status, count in sorted(self.statuses.items())},
            error_samples=self.error_samples,
        )


@dataclass
class LoadSummary:
    """The percentiles of a `LoadResult`, as the CLI prints them (JSON, one line)."""

    count: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    ttfb_p50_ms: float
    ttfb_p99_ms: float
    statuses: dict[str, int]
    error_samples: list[str]
    latencies_ms: list[float] | None = None
    ttfb_ms: list[float] | None = None

    @classmethod
    def from_json(cls, text: str) -> LoadSummary:
        data: dict[str, Any] = json.loads(text)
        fixed: dict[str, Any] = {key: math.nan if value is None else value for key, value in data.items()}
        return cls(**fixed)

    def to_json(self) -> str:
        data: dict[str, Any] = {key: value for key, value in asdict(self).items() if value is not None}
        return json.dumps({k: None if isinstance(v, float) and math.isnan(v) else v for k, v in data.items()})


class _Run:
    """State shared by the connections of one run."""

    def __init__(self, result: LoadResult, deadline: float, record_from: float, expect: bytes | None) -> None:
        self.result = result
        self.deadline = deadline
        self.record_from = record_from
        self.expect = expect

    def error(self, reason: str) -> None:
        if _perf() >= self.record_from:
            self.result.errors += 1
            if len(self.result.error_samples) < 5:
                self.result.error_samples.append(reason)


class _Connection(asyncio.Protocol):
    """One keep-alive connection, sending the request again each time a response completes."""

    def __init__(self, run: _Run, request: bytes, done: asyncio.Future[None]) -> None:
        self.run = run
        self.request = request
        self.done = done
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.sent_at = 0.0
        self.first_byte_at = 0.0
        self.in_flight = False
        self._reset()

    def _reset(self) -> None:
        self.head_parsed = False
        self.status = 0
        self.length = -1  # -1: chunked or to connection close
        self.chunked = False
        self.close_after = False
        self.position = 0  # parse position in buffer (after the head)
        self.body = bytearray() if self.run.expect is not None else None
        self.first_byte_at = 0.0

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, so no isinstance check here.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.in_flight:
            if self.head_parsed and self.length == -1 and not self.chunked:
                self._complete()  # a connection-delimited body ends here
            else:
                self.run.error(f"connection lost: {exc!r}")
        if not self.done.done():
            self.done.set_result(None)

    def data_received(self, data: bytes) -> None:
        if not self.in_flight:
            self.run.error("unsolicited bytes")
            self._abort()
            return
        buffer = self.buffer
        buffer += data
        if not self.head_parsed:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            self._parse_head(bytes(buffer[:end]))
            self.position = end + 4
        if self.chunked:
            self._read_chunked()
        elif self.length >= 0:
            available = len(buffer) - self.position
            if available > 0 and not self.first_byte_at:
                self.first_byte_at = _perf()
            if available >= self.length:
                if self.body is not None:
                    self.body += buffer[self.position : self.position + self.length]
                del buffer[: self.position + self.length]
                self._complete()
        else:
            if len(buffer) > self.position:
                if not self.first_byte_at:
                    self.first_byte_at = _perf()
                if self.body is not None:
                    self.body += buffer[self.position :]
                del buffer[self.position :]

    # parsing

    def _parse_head(self, head: bytes) -> None:
        self.head_parsed = True
        lines = head.split(b"\r\n")
        self.status = int(lines[0][9:12])
        self.close_after = lines[0][:8] == b"HTTP/1.0"
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                self.length = int(value)
            elif name == b"transfer-encoding":
                self.chunked = b"chunked" in value.lower()
            elif name == b"connection":
                value = value.strip().lower()
                self.close_after = value == b"close" or (self.close_after and value != b"keep-alive")
        if self.status in (204, 304) or 100 <= self.status < 200:
            self.length = 0
        elif self.length == -1 and not self.chunked:
            self.close_after = True  # the body ends when the server closes the connection

    def _read_chunked(self) -> None:
        buffer = self.buffer
        position = self.position
        while True:
            line_end = buffer.find(b"\r\n", position)
            if line_end < 0:
                break
            size = int(bytes(buffer[position:line_end]).split(b";", 1)[0], 16)
            if size == 0:
                trailer_end = buffer.find(b"\r\n\r\n", line_end)
                if trailer_end < 0:
                    break
                del buffer[: trailer_end + 4]
                self._complete()
                return
            start = line_end + 2
            if len(buffer) > start and not self.first_byte_at:
                self.first_byte_at = _perf()
            if len(buffer) < start + size + 2:
                break
            if self.body is not None:
                self.body += buffer[start : start + size]
            position = start + size + 2
        self.position = position

    def _complete(self) -> None:
        now = _perf()
        self.in_flight = False
        run = self.run
        if self.sent_at >= run.record_from:
            result = run.result
            result.statuses[self.status] = result.statuses.get(self.status, 0) + 1
            if not 200 <= self.status < 300:
                run.error(f"HTTP {self.status}")
            elif self.body is not None and run.expect is not None and run.expect not in self.body:
                run.error(f"HTTP {self.status} without {run.expect!r}: {bytes(self.body[:200])!r}")
            else:
                result.completed += 1
                result.latencies_ms.append((now - self.sent_at) * 1000.0)
                result.ttfb_ms.append(((self.first_byte_at or now) - self.sent_at) * 1000.0)
        if self.close_after:
            self._abort()
            return
        self._reset()
        if self.transport is not None:
            self._send()

    def _send(self) -> None:
        if self.transport is None:
            return
        now = _perf()
        if now >= self.run.deadline:
            self.transport.close()
            return
        self.sent_at = now
        self.in_flight = True
        self.transport.write(self.request)

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def timed_out(self, now: float, timeout: float) -> bool:
        return self.in_flight and now - self.sent_at > timeout

    def kill(self) -> None:
        self.in_flight = False
        self.run.error("timed out")
        if self.transport is not None:
            self.transport.abort()


def build_request(
    url: str, body: bytes | None, headers: Mapping[str, str], method: str | None = None
) -> bytes:
    """The raw HTTP/1.1 request bytes, with Host, Content-Length and keep-alive set."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"only http:// URLs are supported: {url}")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    verb = method or ("POST" if body is not None else "GET")
    lines = [f"{verb} {target} HTTP/1.1", f"Host: {parts.netloc}"]
    names = {name.lower() for name in headers}
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
        if "content-type" not in names:
            lines.append("Content-Type: application/json")
    if "connection" not in names:
        lines.append("Connection: keep-alive")
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


async def _open(loop: asyncio.AbstractEventLoop, connection: _Connection, host: str, port: int) -> None:
    await loop.create_connection(lambda: connection, host, port)


async def _worker(
    host: str, port: int, run: _Run, request: bytes, connections: list[_Connection], stop_at: float
) -> None:
    """Keeps one connection busy until the deadline, reconnecting after closes and failures."""
    loop = asyncio.get_running_loop()
    while _perf() < stop_at:
        done: asyncio.Future[None] = loop.create_future()
        connection = _Connection(run, request, done)
        try:
            await _open(loop, connection, host, port)
        except OSError as error:
            run.error(f"connect: {error!r}")
            await asyncio.sleep(0.01)  # back off a little before reconnecting, not a readiness wait
            continue
        connections.append(connection)
        try:
            await done
        finally:
            connections.remove(connection)


async def run_load(
    url: str,
    body: bytes | None,
    headers: Mapping[str, str],
    concurrency: int,
    seconds: float,
    *,
    warmup: float = 0.0,
    request_timeout: float = 30.0,
    expect: bytes | None = None,
    method: str | None = None,
) -> LoadResult:
    """Drives `url` with `concurrency` closed-loop keep-alive connections for `warmup` + `seconds`.

    Requests sent during the warm-up are not recorded. `body` None sends GETs. With `expect`, a 2xx
    response whose body does not contain those bytes counts as an error.
    """
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    request = build_request(url, body, headers, method)
    result = LoadResult()
    started = _perf()
    record_from = started + warmup
    deadline = record_from + seconds
    run = _Run(result, deadline, record_from, expect)
    connections: list[_Connection] = []

    async def watchdog() -> None:
        while True:
            await asyncio.sleep(min(1.0, request_timeout / 4))
            now = _perf()
            for connection in list(connections):
                if connection.timed_out(now, request_timeout):
                    connection.kill()

    guard = asyncio.create_task(watchdog())
    try:
        await asyncio.gather(
            *(_worker(host, port, run, request, connections, deadline) for _ in range(concurrency))
        )
    finally:
        guard.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await guard
    result.wall_seconds = _perf() - record_from
    return result


def run_load_process(
    url: str,
    body: bytes | None,
    headers: Mapping[str, str],
    concurrency: int,
    seconds: float,
    *,
    warmup: float = 0.0,
    timeout: float = 30.0,
    expect: bytes | None = None,
    raw: bool = False,
    python: str = sys.executable,
) -> LoadSummary:
    """Runs the CLI in its own process (its CPU is not charged to the caller) and returns its summary."""
    root = Path(__file__).resolve().parents[2]
    with tempfile.NamedTemporaryFile(prefix="loadgen-body-", suffix=".json") as body_file:
        command = [python, "-m", "scripts.benchkit.loadgen", url, "--concurrency", str(concurrency)]
        command += ["--seconds", str(seconds), "--warmup", str(warmup), "--timeout", str(timeout)]
        if body is not None:
            body_file.write(body)
            body_file.flush()
            command += ["--body", body_file.name]
        for name, value in headers.items():
            command += ["--header", f"{name}: {value}"]
        if expect is not None:
            command += ["--expect", expect.decode()]
        if raw:
            command.append("--raw")
        completed = subprocess.run(
            command,
            cwd=root,
            capture_output=True,
            text=True,
            check=False,
            timeout=warmup + seconds + timeout + 60,
        )
    if completed.returncode != 0:
        raise RuntimeError(f"loadgen failed ({completed.returncode}): {completed.stderr.strip()[-2000:]}")
    return LoadSummary.from_json(completed.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("url")
    parser.add_argument("--concurrency", "-c", type=int, default=1)
    parser.add_argument("--seconds", "-s", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=0.0, help="seconds of unrecorded load first")
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request time-out, seconds")
    parser.add_argument("--body", type=Path, help="file whose bytes are POSTed (default: GET)")
    parser.add_argument("--header", "-H", action="append", default=[], help="'name: value', repeatable")
    parser.add_argument("--method", help="override the method (default POST with --body, else GET)")
    parser.add_argument("--expect", help="a 2xx body lacking this text counts as an error, e.g. '[DONE]'")
    parser.add_argument("--raw", action="store_true", help="include every latency and TTFB in the JSON")
    parser.add_argument("--no-uvloop", action="store_true", help="use the default asyncio loop")
    args = parser.parse_args(argv)
    headers: dict[str, str] = {}
    for header in args.header:
        name, separator, value = header.partition(":")
        if not separator:
            parser.error(f"--header needs 'name: value', got {header!r}")
        headers[name.strip()] = value.strip()
    if not args.no_uvloop:
        install_uvloop()
    result = asyncio.run(
        run_load(
            args.url,
            args.body.read_bytes() if args.body else None,
            headers,
            args.concurrency,
            args.seconds,
            warmup=args.warmup,
            request_timeout=args.timeout,
            expect=args.expect.encode() if args.expect else None,
            method=args.method,
        )
    )
    summary = result.summary()
    if args.raw:
        summary.latencies_ms = [round(value, 4) for value in result.latencies_ms]
        summary.ttfb_ms = [round(value, 4) for value in result.ttfb_ms]
    print(summary.to_json(), flush=True)


if __name__ == "__main__":
    main()
