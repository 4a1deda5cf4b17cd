"""MessagesService: Anthropic's Messages API. Every call authenticates its API key first
(`x-api-key` or `Authorization: Bearer`); `anthropic-version` is accepted whatever it says."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from crosscompute.v1 import messages_service_pb2 as pb
from crosscompute.v1 import messages_service_pb2_grpc as pb_grpc
from google.api import httpbody_pb2

from server.api.metadata import api_key
from server.api.replies import answer_bodies
from server.domain.chat.service import ChatService
from server.domain.key_auth import ApiKeyAuthenticator

Context = grpc.aio.ServicerContext[Any, Any]


class MessagesServicer(pb_grpc.MessagesServiceServicer):
    """Messages and their token counts."""

    def __init__(self, authenticator: ApiKeyAuthenticator, chat: ChatService) -> None:
        self._authenticator = authenticator
        self._chat = chat

    async def CreateMessage(
        self, request: pb.CreateMessageRequest, context: Context
    ) -> AsyncIterator[pb.CreateMessageResponse]:
        principal = await self._authenticator.authenticate(api_key(context))
        call = await self._chat.start_message(principal, request.body.data)
        async for body in answer_bodies(call, context):
            yield pb.CreateMessageResponse(body=body)

    async def CountMessageTokens(
        self, request: pb.CountMessageTokensRequest, context: Context
    ) -> pb.CountMessageTokensResponse:
        await self._authenticator.authenticate(api_key(context))
        counted = self._chat.count_message_tokens(request.body.data)
        return pb.CountMessageTokensResponse(
            body=httpbody_pb2.HttpBody(content_type="application/json", data=counted)
        )
