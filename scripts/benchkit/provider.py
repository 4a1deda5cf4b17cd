"""A fast stand-in OpenAI chat-completions provider for benchmarks, run as its own process.

It speaks HTTP/1.1 with keep-alive on a bare asyncio `Protocol` (uvloop when installed), parses the
request head and a Content-Length (or chunked) body by hand and answers in OpenAI's wire format:

- `POST /v1/chat/completions`: a `chat.completion` JSON, or with `"stream": true` an SSE stream
  (chunked transfer-encoding, so the connection stays open) of `chat.completion.chunk` objects: a role
  chunk, two content chunks, a finish chunk, a usage chunk when `stream_options.include_usage` is true,
  then `data: [DONE]`. The content is always "Hello there"; the request's `model` is echoed.
- `GET /health`: 200. `GET /v1/models`: a one-model list (echoing `--model`).

Nagle's algorithm is off on every accepted socket. Run it as

    python -m scripts.benchkit.provider --port 0 --port-file /tmp/provider.port

The first line on stdout is `PORT <n>` once the socket listens; `--port-file` is written atomically
(temporary file, then rename) with the same number. SIGTERM and SIGINT stop it cleanly. From Python,
`running_provider()` starts it as a subprocess and yields its base URL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from scripts.benchkit import install_uvloop

CONTENT_PIECES = ("Hello", " there")
COMPLETION_TOKENS = 2
MAX_HEAD = 64 * 1024
MAX_BODY = 16 * 1024 * 1024

_ids = itertools.count(1)


def _prompt_tokens(request: dict[str, Any]) -> int:
    """A cheap, deterministic stand-in for a token count: about one token per four characters."""
    total = 0
    messages = request.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                content = message.get("content")
                total += 4 + len(content if isinstance(content, str) else json.dumps(content)) // 4
    return max(total, 1)


def _usage(prompt_tokens: int) -> str:
    return (
        f'{{"prompt_tokens":{prompt_tokens},"completion_tokens":{COMPLETION_TOKENS},'
        f'"total_tokens":{prompt_tokens + COMPLETION_TOKENS}}}'
    )


def completion_body(model: str, prompt_tokens: int) -> bytes:
    """A non-streamed `chat.completion` object, exactly as OpenAI sends it."""
    return (
        f'{{"id":"chatcmpl-bench{next(_ids)}","object":"chat.completion","created":{int(time.time())},'
        f'"model":{json.dumps(model)},"choices":[{{"index":0,"message":{{"role":"assistant",'
        f'"content":{json.dumps("".join(CONTENT_PIECES))},"refusal":null,"annotations":[]}},'
        f'"logprobs":null,"finish_reason":"stop"}}],"usage":{_usage(prompt_tokens)},'
        f'"service_tier":"default","system_fingerprint":null}}'
    ).encode()


def stream_events(model: str, prompt_tokens: int, include_usage: bool) -> list[bytes]:
    """The SSE events of a streamed completion, each `data: ...\\n\\n`, ending with `[DONE]`."""
    head = (
        f'{{"id":"chatcmpl-bench{next(_ids)}","object":"chat.completion.chunk","created":{int(time.time())},'
        f'"model":{json.dumps(model)},"service_tier":"default","system_fingerprint":null,'
    )
    tail = ',"usage":null}' if include_usage else "}"
    deltas = [
        ('{"role":"assistant","content":"","refusal":null}', "null"),
        *((f'{{"content":{json.dumps(piece)}}}', "null") for piece in CONTENT_PIECES),
        ("{}", '"stop"'),
    ]
    events = [
        f'{head}"choices":[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish}}}]{tail}'
        for delta, finish in deltas
    ]
    if include_usage:
        events.append(f'{head}"choices":[],"usage":{_usage(prompt_tokens)}}}')
    events.append("[DONE]")
    return [f"data: {event}\n\n".encode() for event in events]


def _response(status: bytes, content_type: bytes, body: bytes, keep_alive: bool) -> bytes:
    connection = b"keep-alive" if keep_alive else b"close"
    return b"".join(
        (
            b"HTTP/1.1 ",
            status,
            b"\r\nContent-Type: ",
            content_type,
            b"\r\nContent-Length: ",
            str(len(body)).encode(),
            b"\r\nConnection: ",
            connection,
            b"\r\n\r\n",
            body,
        )
    )


def _chunked_response(events: list[bytes], keep_alive: bool) -> bytes:
    connection = b"keep-alive" if keep_alive else b"close"
    parts = [
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-cache\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: ",
        connection,
        b"\r\n\r\n",
    ]
    for event in events:
        parts += (b"%x\r\n" % len(event), event, b"\r\n")
    parts.append(b"0\r\n\r\n")
    return b"".join(parts)


class ProviderProtocol(asyncio.Protocol):
    """One keep-alive connection: parses pipelined requests out of a buffer and answers each at once."""

    models_body: bytes = b""
    access_log: bool = False

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not subclasses of asyncio.Transport, so no isinstance check here.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None and self._handle_one():
            pass

    def _handle_one(self) -> bool:
        """Answers the first complete request in the buffer; False when more bytes are needed."""
        buffer = self.buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HEAD:
                self._fail(b"431 Request Header Fields Too Large")
            return False
        lines = bytes(buffer[:end]).split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            self._fail(b"400 Bad Request")
            return False
        method, target, version = parts
        length = 0
        chunked = False
        keep_alive = version == b"HTTP/1.1"
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                value = value.strip().lower()
                keep_alive = value != b"close" if keep_alive else value == b"keep-alive"
        start = end + 4
        if chunked:
            decoded = _decode_chunked(buffer, start)
            if decoded is None:
                if len(buffer) > MAX_BODY:
                    self._fail(b"413 Content Too Large")
                return False
            body, consumed = decoded
        else:
            if length > MAX_BODY:
                self._fail(b"413 Content Too Large")
                return False
            if len(buffer) < start + length:
                return False
            body, consumed = bytes(buffer[start : start + length]), start + length
        del buffer[:consumed]
        if self.access_log:
            print(method.decode(), target.decode(), file=sys.stderr, flush=True)
        self._answer(method, target.split(b"?", 1)[0], body, keep_alive)
        return True

    def _answer(self, method: bytes, path: bytes, body: bytes, keep_alive: bool) -> None:
        assert self.transport is not None
        if path == b"/v1/chat/completions" or path == b"/chat/completions":
            if method != b"POST":
                out = _response(b"405 Method Not Allowed", b"application/json", b"{}", keep_alive)
            else:
                out = self._completion(body, keep_alive)
        elif path == b"/health" and method in (b"GET", b"HEAD"):
            out = _response(b"200 OK", b"application/json", b'{"status":"ok"}', keep_alive)
        elif (path == b"/v1/models" or path == b"/models") and method == b"GET":
            out = _response(b"200 OK", b"application/json", self.models_body, keep_alive)
        else:
            error = b'{"error":{"message":"not found","type":"invalid_request_error","code":null}}'
            out = _response(b"404 Not Found", b"application/json", error, keep_alive)
        self.transport.write(out)
        if not keep_alive:
            self.transport.close()

    def _completion(self, body: bytes, keep_alive: bool) -> bytes:
        try:
            request = json.loads(body)
            if not isinstance(request, dict):
                raise ValueError("not an object")
        except ValueError:
            error = b'{"error":{"message":"invalid JSON body","type":"invalid_request_error","code":null}}'
            return _response(b"400 Bad Request", b"application/json", error, keep_alive)
        model = request.get("model")
        model = model if isinstance(model, str) else "stand-in"
        prompt_tokens = _prompt_tokens(request)
        if request.get("stream") is True:
            options = request.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            return _chunked_response(stream_events(model, prompt_tokens, include_usage), keep_alive)
        return _response(b"200 OK", b"application/json", completion_body(model, prompt_tokens), keep_alive)

    def _fail(self, status: bytes) -> None:
        assert self.transport is not None
        self.transport.write(_response(status, b"text/plain", status, False))
        self.transport.close()
        self.buffer.clear()


def _decode_chunked(buffer: bytearray, start: int) -> tuple[bytes, int] | None:
    """Decodes a chunked body starting at `start`: (body, end offset), or None if incomplete."""
    pieces: list[bytes] = []
    position = start
    while True:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return None
        size = int(bytes(buffer[position:line_end]).split(b";", 1)[0], 16)
        position = line_end + 2
        if size == 0:
            trailer_end = buffer.find(b"\r\n\r\n", position - 2)
            if trailer_end < 0:
                return None
            return b"".join(pieces), trailer_end + 4
        if len(buffer) < position + size + 2:
            return None
        pieces.append(bytes(buffer[position : position + size]))
        position += size + 2


def _write_port_file(path: Path, port: int) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(f"{port}\n")
    temporary.replace(path)


async def serve(host: str, port: int, port_file: Path | None, model: str) -> None:
    """Listens until SIGTERM or SIGINT; announces the bound port on stdout (and in `port_file`)."""
    ProviderProtocol.models_body = json.dumps(
        {"object": "list", "data": [{"id": model, "object": "model", "created": 0, "owned_by": "bench"}]}
    ).encode()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(ProviderProtocol, host, port, backlog=1024, reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    if port_file is not None:
        _write_port_file(port_file, bound)
    print(f"PORT {bound}", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--port-file", type=Path, help="also write the bound port here, atomically")
    parser.add_argument("--model", default="gpt-5-mini", help="the id listed by GET /v1/models")
    parser.add_argument("--no-uvloop", action="store_true", help="use the default asyncio loop")
    parser.add_argument("--access-log", action="store_true", help="print each request line to stderr")
    args = parser.parse_args(argv)
    if not args.no_uvloop:
        install_uvloop()
    ProviderProtocol.access_log = args.access_log
    asyncio.run(serve(args.host, args.port, args.port_file, args.model))


@contextlib.contextmanager
def running_provider(
    python: str = sys.executable, extra_args: tuple[str, ...] = (), stderr_path: Path | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Starts the provider in its own process; yields (base URL such as http://127.0.0.1:PORT, process).

    The port is read from the child's first stdout line (it blocks until the socket listens, no polling
    needed); the child is terminated (then killed after 10 s) on exit.
    """
    root = Path(__file__).resolve().parents[2]
    with contextlib.ExitStack() as stack:
        stderr = stack.enter_context(stderr_path.open("ab")) if stderr_path else subprocess.DEVNULL
        process = subprocess.Popen(
            [python, "-m", "scripts.benchkit.provider", "--port", "0", *extra_args],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,
        )
        try:
            assert process.stdout is not None
            line = process.stdout.readline().decode().split()
            if len(line) != 2 or line[0] != "PORT":
                raise RuntimeError(f"provider did not start (exit code {process.poll()}): {line!r}")
            yield f"http://127.0.0.1:{int(line[1])}", process
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()


if __name__ == "__main__":
    main()
