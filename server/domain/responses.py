"""The Responses API: a conversation answered in Responses' shapes and, when the caller asks to
`store` it (the default), kept for its account in the database, so `GET` and `DELETE` and
`previous_response_id` work on any replica and only for that account."""

from __future__ import annotations

import logging

import orjson

from server.db.repositories.responses import ResponseRepository
from server.domain.chat.service import ChatCall, ChatService
from server.domain.conversation import Answer, Billed, Failure, Message, message_json
from server.domain.errors import InvalidArgument, NotFound
from server.domain.key_auth import KeyPrincipal
from server.domain.wire import responses
from server.domain.wire.chat_completions import turn_of

logger = logging.getLogger(__name__)


def _not_found(response_id: str) -> NotFound:
    return NotFound(
        f"Response with id '{response_id[:64]}' not found.", param="response_id", reason="RESPONSE_NOT_FOUND"
    )


def turns_of(conversation: str) -> list[Message]:
    """A stored conversation's turns."""
    return [turn_of(value, index) for index, value in enumerate(orjson.loads(conversation))]


class ResponsesService:
    """Create, read and delete responses."""

    def __init__(self, chat: ChatService, repository: ResponseRepository) -> None:
        self._chat = chat
        self._repository = repository

    async def create(self, principal: KeyPrincipal, raw: bytes) -> ChatCall:
        request = responses.parse(raw)
        previous = request.previous_response_id
        if previous is not None:
            row = await self._repository.get(previous, principal.account_id)
            if row is None:
                raise InvalidArgument(
                    f"Previous response with id '{previous[:64]}' not found.",
                    param="previous_response_id",
                    reason="PREVIOUS_RESPONSE_NOT_FOUND",
                )
            request.continuing(turns_of(row.conversation))
        rendering = responses.Responses(request)

        async def finished(answer: Answer, billed: Billed, failure: Failure | None) -> None:
            assert rendering.call is not None
            await self._store(
                principal, rendering, rendering.outcome(rendering.call, answer, billed, failure), answer
            )

        call = await self._chat.converse(
            principal, request.conversation, rendering, finished if request.store else None
        )
        if request.store and call.answer is not None and rendering.final is not None:
            try:
                await self._store(principal, rendering, rendering.final, call.answer)
            except Exception:
                # The answer is billed already: the caller gets it, and only a continuation fails.
                logger.exception("storing response %s failed", rendering.final["id"])
        return call

    async def _store(
        self, principal: KeyPrincipal, rendering: responses.Responses, body: dict[str, object], answer: Answer
    ) -> None:
        request = rendering.request
        output = responses.output_turn(answer)
        turns = [*request.input_turns, *([output] if output is not None else [])]
        await self._repository.save(
            response_id=str(body["id"]),
            account_id=principal.account_id,
            key_id=principal.key_id,
            status=str(body["status"]),
            model=str(body["model"]),
            previous_response_id=request.previous_response_id,
            conversation=orjson.dumps([message_json(turn) for turn in turns]).decode(),
            body=orjson.dumps(body).decode(),
        )

    async def get(self, principal: KeyPrincipal, response_id: str) -> bytes:
        row = await self._repository.get(response_id, principal.account_id)
        if row is None:
            raise _not_found(response_id)
        return row.body.encode()

    async def delete(self, principal: KeyPrincipal, response_id: str) -> bytes:
        if not await self._repository.delete(response_id, principal.account_id):
            raise _not_found(response_id)
        return orjson.dumps({"id": response_id, "object": "response", "deleted": True})
