"""The local simulator: NOT a real model. It answers every request with a short canned text about
the request, so a newcomer can try the gateway (keys, billing, streaming) with no provider at all."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from server.domain.catalog import ModelSpec
from server.domain.chat.tokens import count_prompt, count_text
from server.domain.conversation import (
    Answer,
    AnswerEvent,
    Conversation,
    Finish,
    Started,
    TextDelta,
    Usage,
    UsageReport,
)

NOTICE = "[CrossCompute simulator: not a real model]"


def _answer(request: Conversation, max_output: int) -> str:
    words = request.last_user_text.split()
    echo = " ".join(words[:24]) + (" …" if len(words) > 24 else "")
    text = f"{NOTICE} You wrote {len(words)} words: “{echo}”. Configure a provider key for real answers."
    tokens = text.split(" ")
    return " ".join(tokens[:max_output])


def _usage(request: Conversation, text: str) -> Usage:
    return Usage(input_tokens=count_prompt(request.messages, request.options), output_tokens=count_text(text))


class SimulatorClient:
    """Answers locally, streamed word by word or whole."""

    async def complete(self, spec: ModelSpec, request: Conversation, max_output: int) -> Answer:
        text = _answer(request, max_output)
        return Answer(text=text, usage=_usage(request, text))

    async def stream(
        self, spec: ModelSpec, request: Conversation, max_output: int
    ) -> AsyncIterator[AnswerEvent]:
        text = _answer(request, max_output)
        yield Started()
        for index, word in enumerate(text.split(" ")):
            await asyncio.sleep(0)  # let other requests run between words
            yield TextDelta(word if index == 0 else f" {word}")
        yield Finish("stop")
        yield UsageReport(_usage(request, text))

    async def aclose(self) -> None:
        return None
