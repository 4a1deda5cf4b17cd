"""What every provider client offers, and how their failures are described."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from server.domain.catalog import ModelSpec
from server.domain.chat.request import ChatRequest


@dataclass(frozen=True)
class Usage:
    """Tokens an upstream call consumed."""

    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0


@dataclass(frozen=True)
class Completion:
    """A whole answer as an OpenAI `chat.completion` object, with its usage when reported."""

    body: dict[str, Any]
    usage: Usage | None


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
    """One provider's client."""

    async def complete(self, spec: ModelSpec, request: ChatRequest, max_output: int) -> Completion: ...

    def stream(self, spec: ModelSpec, request: ChatRequest, max_output: int) -> AsyncIterator[dict[str, Any]]:
        """OpenAI `chat.completion.chunk` objects; the last carries `usage` when the provider reports it."""
        ...

    async def aclose(self) -> None: ...
