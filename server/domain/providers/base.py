"""What every provider client offers, and how their failures are described."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from server.domain.catalog import ModelSpec
from server.domain.conversation import Answer, AnswerEvent, Conversation, Usage

__all__ = ["ProviderClient", "UpstreamError", "Usage", "error_for_status"]


class UpstreamError(Exception):
    """A provider call failed. `kind` says how: bad_request, auth, rate_limited, overloaded, server,
    timeout, connect or protocol. Only a bad request's message is the provider's own."""

    def __init__(self, kind: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status


def error_for_status(status: int, message: str) -> UpstreamError:
    """The UpstreamError for an HTTP error status from a provider."""
    if status in {401, 403}:
        return UpstreamError("auth", "the provider refused the gateway's credentials", status)
    if status == 429:
        return UpstreamError("rate_limited", "the provider is rate limiting requests", status)
    if status in {503, 529}:
        return UpstreamError("overloaded", "the provider is overloaded", status)
    if status >= 500:
        return UpstreamError("server", f"the provider failed (HTTP {status})", status)
    if status == 404:
        return UpstreamError("bad_request", message or "the provider does not know this model", status)
    return UpstreamError(
        "bad_request", message or f"the provider rejected the request (HTTP {status})", status
    )


class ProviderClient(Protocol):
    """One provider's client, speaking its wire format and answering in typed events."""

    async def complete(self, spec: ModelSpec, request: Conversation, max_output: int) -> Answer: ...

    def stream(self, spec: ModelSpec, request: Conversation, max_output: int) -> AsyncIterator[AnswerEvent]:
        """The answer's events; a `UsageReport` near the end when the provider reports usage."""
        ...

    async def aclose(self) -> None: ...
