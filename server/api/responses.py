"""ResponsesService: OpenAI's Responses API. Every call authenticates its API key first."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from crosscompute.v1 import responses_service_pb2 as pb
from crosscompute.v1 import responses_service_pb2_grpc as pb_grpc
from google.api import httpbody_pb2

from server.api.metadata import bearer_token
from server.api.replies import answer_bodies
from server.domain.key_auth import ApiKeyAuthenticator
from server.domain.responses import ResponsesService

Context = grpc.aio.ServicerContext[Any, Any]


def _json(data: bytes) -> httpbody_pb2.HttpBody:
    return httpbody_pb2.HttpBody(content_type="application/json", data=data)


class ResponsesServicer(pb_grpc.ResponsesServiceServicer):
    """Create, read and delete responses."""

    def __init__(self, authenticator: ApiKeyAuthenticator, responses: ResponsesService) -> None:
        self._authenticator = authenticator
        self._responses = responses

    async def CreateResponse(
        self, request: pb.CreateResponseRequest, context: Context
    ) -> AsyncIterator[pb.CreateResponseResponse]:
        principal = await self._authenticator.authenticate(bearer_token(context))
        call = await self._responses.create(principal, request.body.data)
        async for body in answer_bodies(call, context):
            yield pb.CreateResponseResponse(body=body)

    async def GetResponse(self, request: pb.GetResponseRequest, context: Context) -> pb.GetResponseResponse:
        principal = await self._authenticator.authenticate(bearer_token(context))
        return pb.GetResponseResponse(body=_json(await self._responses.get(principal, request.response_id)))

    async def DeleteResponse(
        self, request: pb.DeleteResponseRequest, context: Context
    ) -> pb.DeleteResponseResponse:
        principal = await self._authenticator.authenticate(bearer_token(context))
        return pb.DeleteResponseResponse(
            body=_json(await self._responses.delete(principal, request.response_id))
        )
