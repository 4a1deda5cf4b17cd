"""The request id of the call being served, for logs and usage records."""

from __future__ import annotations

from contextvars import ContextVar

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")


def current_request_id() -> str:
    """The request id of the call being served (`-` outside a call)."""
    return request_id_var.get()
