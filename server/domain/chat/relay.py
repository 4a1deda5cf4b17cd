"""A streamed answer: relayed to the caller chunk by chunk, its hold's lease renewed as it goes, and
closed exactly once however it ends.

- A relay that started bills what it produced: the provider's reported usage, or for a cut stream or
  a caller that left, the output counted locally.
- A relay that never started (the caller left, or the response headers could not be sent, before the
  first chunk was asked for) delivered nothing: the hold goes back whole, at once, and the provider's
  stream is closed.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from server.domain.chat.failures import domain_error
from server.domain.chat.lease import LeaseRenewal
from server.domain.chat.tokens import count_text
from server.domain.credits import micro_to_wire
from server.domain.holds import Settlement
from server.domain.providers.base import UpstreamError, Usage
from server.domain.providers.openai_compat import usage_of
from server.domain.uninterrupted import shielded

logger = logging.getLogger(__name__)


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def error_event(message: str, code: str) -> bytes:
    """An in-band error: the headers are gone, so a failure is reported in the stream itself."""
    return sse({"error": {"message": message, "type": "api_error", "code": code, "param": None}})


@dataclass
class Produced:
    """What a stream has delivered so far, to bill a stream that ends early."""

    text: list[str] = field(default_factory=list)
    usage: Usage | None = None

    def add(self, chunk: dict[str, Any]) -> None:
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str):
                self.text.append(delta["content"])
            for call in delta.get("tool_calls") or ():
                function = call.get("function") or {}
                self.text.extend(str(function.get(part) or "") for part in ("name", "arguments"))
        if chunk.get("usage"):
            self.usage = usage_of(chunk["usage"])

    def counted(self, prompt_tokens: int) -> Usage:
        return self.usage or Usage(input_tokens=prompt_tokens, output_tokens=count_text("".join(self.text)))


@dataclass(frozen=True)
class RelayBilling:
    """The money steps of one streamed call."""

    #: Bill the call for `usage` (the first close wins).
    settle: Callable[[Usage], Awaitable[Settlement]]
    #: Give the whole hold back: nothing reached the caller.
    abandon: Callable[[], Awaitable[None]]
    #: Extend the hold's lease; False when the hold is closed already.
    renew: Callable[[], Awaitable[bool]]
    renewal: LeaseRenewal


class StreamRelay:
    """One answering provider stream, from its first chunk on. Iterate `chunks`; always `aclose`."""

    def __init__(
        self,
        call_id: str,
        model_id: str,
        price_rule: str,
        include_usage: bool,
        counted_prompt: int,
        first: dict[str, Any],
        upstream: AsyncIterator[dict[str, Any]],
        billing: RelayBilling,
    ) -> None:
        self._call_id = call_id
        self._model_id = model_id
        self._price_rule = price_rule
        self._include_usage = include_usage
        self._counted_prompt = counted_prompt
        self._first = first
        self._upstream = upstream
        self._billing = billing
        self._started = False
        self._closed = False
        self.chunks: AsyncGenerator[bytes, None] = self._relay()

    async def aclose(self) -> None:
        """Close the relay, once (later calls do nothing)."""
        if self._closed:
            return
        self._closed = True
        # A started relay ends here (its `finally` bills what it produced); an unstarted one has no
        # frame to run, so nothing was delivered and nothing is billed.
        await self.chunks.aclose()
        if not self._started:
            try:
                await shielded(self._billing.abandon())
            finally:
                await self._close_upstream()

    async def _close_upstream(self) -> None:
        await self._upstream.aclose()  # type: ignore[attr-defined]

    async def _settle(self, produced: Produced) -> Settlement:
        return await shielded(self._billing.settle(produced.counted(self._counted_prompt)))

    async def _renew(self) -> None:
        renewal = self._billing.renewal
        renewal.renewing()
        try:
            if not await self._billing.renew():
                logger.warning(
                    "call %s: its hold was closed while its stream was live",
                    self._call_id,
                    extra={"call_id": self._call_id},
                )
        except Exception as error:
            renewal.failed()
            logger.warning(
                "call %s: renewing its hold's lease failed: %s",
                self._call_id,
                type(error).__name__,
                extra={"call_id": self._call_id},
            )

    async def _relay(self) -> AsyncGenerator[bytes, None]:
        self._started = True
        produced = Produced()
        settled = False
        chunk: dict[str, Any] | None = self._first
        last: dict[str, Any] = self._first
        try:
            while chunk is not None:
                produced.add(chunk)
                last = chunk
                if chunk.get("choices"):
                    yield sse({**chunk, "model": self._model_id})
                if self._billing.renewal.due():
                    await self._renew()
                chunk = await anext(self._upstream, None)
            settlement = await self._settle(produced)
            settled = True
            if self._include_usage:
                yield self._usage_chunk(last, produced.counted(self._counted_prompt), settlement)
            yield b"data: [DONE]\n\n"
        except UpstreamError as error:
            await self._settle(produced)
            settled = True
            mapped = domain_error(error)
            logger.warning("upstream failed mid-stream: %s", error.kind, extra={"call_id": self._call_id})
            yield error_event(mapped.message, mapped.reason.lower())
        except Exception:
            # Headers are gone: a failure of ours is also reported in-band, never as a silent end.
            logger.exception("stream relay failed", extra={"call_id": self._call_id})
            await self._settle(produced)
            settled = True
            yield error_event("internal error", "internal")
        finally:
            if not settled:
                # The caller went away (or the server is stopping): bill what was produced, once.
                await self._settle(produced)
            await self._close_upstream()

    def _usage_chunk(self, last: dict[str, Any], usage: Usage, settlement: Settlement) -> bytes:
        return sse(
            {
                "id": last.get("id", ""),
                "object": "chat.completion.chunk",
                "created": last.get("created", 0),
                "model": self._model_id,
                "choices": [],
                "usage": {
                    "prompt_tokens": usage.input_tokens,
                    "completion_tokens": usage.output_tokens,
                    "total_tokens": usage.input_tokens + usage.output_tokens,
                    "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
                },
                "crosscompute": {
                    "billed_credits": micro_to_wire(settlement.billed_micro),
                    "price_rule": self._price_rule,
                },
            }
        )
