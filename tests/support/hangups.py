"""A client that sends a request through Envoy and leaves before reading any answer."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any

import httpx

from tests.support.gateway import Gateway
from tests.support.waiting import eventually


def hang_up_after(
    gateway: Gateway,
    path: str,
    body: dict[str, Any],
    reached: Callable[[], object],
    headers: dict[str, str],
    *,
    what: str = "the request to reach the point where the client leaves",
) -> None:
    """POST `body` to `path` on a raw connection, wait until `reached()`, then close the connection
    without reading anything: the hang-up happens exactly there, never earlier or later."""
    url = httpx.URL(gateway.base_url)
    data = json.dumps(body).encode()
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {url.host}:{url.port}",
        "Content-Type: application/json",
        f"Content-Length: {len(data)}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    with socket.create_connection((url.host, url.port or 80), timeout=30) as connection:
        connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
        eventually(reached, timeout=30, what=what)
