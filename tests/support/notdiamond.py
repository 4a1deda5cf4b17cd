"""A local stand-in for NotDiamond's model-select API: it answers what the test tells it to."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class NotDiamondStandIn:
    """`choice` is (provider, model) to answer; `delay_seconds` makes it slow; `failing` makes it 500."""

    choice: tuple[str, str] = ("anthropic", "claude-haiku-4-5")
    delay_seconds: float = 0.0
    failing: bool = False
    received: list[dict[str, Any]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @contextmanager
    def running(self) -> Iterator[NotDiamondStandIn]:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
                stand_in.received.append(
                    {"path": self.path, "body": body, "auth": self.headers.get("authorization")}
                )
                if stand_in.delay_seconds:
                    time.sleep(stand_in.delay_seconds)
                status = 500 if stand_in.failing else 200
                provider, model = stand_in.choice
                answer = {
                    "providers": [{"provider": provider, "model": model}],
                    "session_id": "nd-session-42",
                }
                data = json.dumps(answer if status == 200 else {"detail": "boom"}).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("x-request-id", "nd-request-7")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join(10)
