"""Server-Sent Events framing, written once for every API."""

from __future__ import annotations

from typing import Any

import orjson

#: Chat Completions' end of stream.
DONE = b"data: [DONE]\n\n"


def data(payload: dict[str, Any]) -> bytes:
    """An unnamed event (Chat Completions' chunks)."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def event(name: str, payload: dict[str, Any]) -> bytes:
    """A named event (Anthropic's and the Responses API's, whose payload repeats the name in `type`)."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"
