"""InferenceService: the OpenAI-compatible surface. Every call authenticates its API key first."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from crosscompute.v1 import inference_service_pb2 as pb
from crosscompute.v1 import inference_service_pb2_grpc as pb_grpc

from server.api.metadata import bearer_token
from server.domain.catalog import Catalog, CatalogEntry
from server.domain.errors import NotFound, NotImplementedYet
from server.domain.key_auth import ApiKeyAuthenticator

Context = grpc.aio.ServicerContext[Any, Any]


def model(entry: CatalogEntry) -> pb.Model:
    return pb.Model(
        id=entry.id, object="model", created=entry.created, owned_by=entry.owned_by, name=entry.name
    )


class InferenceServicer(pb_grpc.InferenceServiceServicer):
    """Models and chat completions."""

    def __init__(self, authenticator: ApiKeyAuthenticator, catalog: Catalog) -> None:
        self._authenticator = authenticator
        self._catalog = catalog

    async def ListModels(self, request: pb.ListModelsRequest, context: Context) -> pb.ListModelsResponse:
        await self._authenticator.authenticate(bearer_token(context))
        entries = self._catalog.list()
        await context.send_initial_metadata(
            (("x-crosscompute-model-catalog", "local"), ("x-crosscompute-model-count", str(len(entries))))
        )
        return pb.ListModelsResponse(object="list", data=[model(entry) for entry in entries])

    async def GetModel(self, request: pb.GetModelRequest, context: Context) -> pb.Model:
        await self._authenticator.authenticate(bearer_token(context))
        entry = self._catalog.get(request.model_id)
        if entry is None:
            raise NotFound(
                f"The model `{request.model_id[:200]}` does not exist.",
                reason="MODEL_NOT_FOUND",
                param="model",
            )
        return model(entry)

    async def CreateChatCompletion(
        self, request: pb.CreateChatCompletionRequest, context: Context
    ) -> AsyncIterator[pb.CreateChatCompletionResponse]:
        await self._authenticator.authenticate(bearer_token(context))
        raise NotImplementedYet("CreateChatCompletion is not implemented yet")
        yield  # a streaming method
