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
from dataclasses import dataclass

from server.domain.chat.failures import domain_error
from server.domain.chat.lease import LeaseRenewal
from server.domain.chat.tokens import count_text
from server.domain.conversation import (
    Answer,
    AnswerBuilder,
    AnswerEvent,
    Billed,
    Failure,
    StreamWriter,
    Usage,
)
from server.domain.holds import Settlement
from server.domain.providers.base import UpstreamError
from server.domain.uninterrupted import shielded

logger = logging.getLogger(__name__)


class Produced(AnswerBuilder):
    """What a stream has delivered so far, to bill a stream that ends early."""

    def counted(self, prompt_tokens: int) -> Usage:
        return self.usage or Usage(input_tokens=prompt_tokens, output_tokens=count_text(self.produced_text))


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


#: Told, once billed, what a relay delivered (and how it broke off, if it did).
Finished = Callable[[Answer, Billed, Failure | None], Awaitable[None]]


class StreamRelay:
    """One answering provider stream, from its first event on, written in the caller's API by
    `writer`. Iterate `chunks`; always `aclose`."""

    def __init__(
        self,
        call_id: str,
        counted_prompt: int,
        writer: StreamWriter,
        first: AnswerEvent,
        upstream: AsyncIterator[AnswerEvent],
        billing: RelayBilling,
        finished: Finished | None = None,
    ) -> None:
        self._call_id = call_id
        self._counted_prompt = counted_prompt
        self._writer = writer
        self._first = first
        self._upstream = upstream
        self._billing = billing
        self._finished = finished
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

    async def _settle(self, produced: Produced, failure: Failure | None = None) -> Billed:
        usage = produced.counted(self._counted_prompt)
        settlement = await shielded(self._billing.settle(usage))
        billed = Billed(usage, settlement.billed_micro)
        if self._finished is not None:
            try:
                await shielded(self._finished(produced.answer(), billed, failure))
            except Exception:
                logger.exception("recording a finished stream failed", extra={"call_id": self._call_id})
        return billed

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
        event: AnswerEvent | None = self._first
        try:
            while event is not None:
                produced.add(event)
                frames = self._writer.write(event)
                if frames:
                    yield frames
                if self._billing.renewal.due():
                    await self._renew()
                event = await anext(self._upstream, None)
            billed = await self._settle(produced)
            settled = True
            yield self._writer.close(billed)
        except UpstreamError as error:
            mapped = domain_error(error)
            failure = Failure(mapped.message, mapped.reason.lower())
            billed = await self._settle(produced, failure)
            settled = True
            logger.warning("upstream failed mid-stream: %s", error.kind, extra={"call_id": self._call_id})
            yield self._writer.fail(failure, billed)
        except Exception:
            # Headers are gone: a failure of ours is also reported in-band, never as a silent end.
            logger.exception("stream relay failed", extra={"call_id": self._call_id})
            failure = Failure("internal error", "internal")
            billed = await self._settle(produced, failure)
            settled = True
            yield self._writer.fail(failure, billed)
        finally:
            if not settled:
                # The caller went away (or the server is stopping): bill what was produced, once.
                await self._settle(produced, Failure("the caller went away", "abandoned"))
            await self._close_upstream()
