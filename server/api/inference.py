"""InferenceService: the OpenAI-compatible surface. Every call authenticates its API key first."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import grpc
from crosscompute.v1 import inference_service_pb2 as pb
from crosscompute.v1 import inference_service_pb2_grpc as pb_grpc

from server.api.metadata import bearer_token
from server.api.replies import answer_bodies
from server.domain.catalog import Catalog, CatalogEntry
from server.domain.chat.service import ChatService
from server.domain.errors import NotFound
from server.domain.key_auth import ApiKeyAuthenticator

Context = grpc.aio.ServicerContext[Any, Any]


def model(entry: CatalogEntry, credits_per_usd: Decimal) -> pb.Model:
    """A catalog entry as an OpenAI model object, with prices in credits per million tokens."""
    message = pb.Model(
        id=entry.id, object="model", created=entry.created, owned_by=entry.owned_by, name=entry.name
    )
    spec = entry.spec
    if spec is not None:
        message.context_length = spec.context_window
        message.pricing.CopyFrom(
            pb.ModelPricing(
                prompt=f"{(spec.prices.input * credits_per_usd).normalize():f}",
                completion=f"{(spec.prices.output * credits_per_usd).normalize():f}",
                input_cache_read=f"{(spec.prices.cached_input * credits_per_usd).normalize():f}",
                rule=spec.price_rule,
            )
        )
        message.capabilities.CopyFrom(
            pb.ModelCapabilities(tools=spec.tools, vision=spec.vision, reasoning=spec.reasoning)
        )
    return message


class InferenceServicer(pb_grpc.InferenceServiceServicer):
    """Models and chat completions."""

    def __init__(
        self,
        authenticator: ApiKeyAuthenticator,
        catalog: Catalog,
        chat: ChatService,
        credits_per_usd: Decimal,
    ) -> None:
        self._authenticator = authenticator
        self._catalog = catalog
        self._chat = chat
        self._credits_per_usd = credits_per_usd

    async def ListModels(self, request: pb.ListModelsRequest, context: Context) -> pb.ListModelsResponse:
        await self._authenticator.authenticate(bearer_token(context))
        entries = self._catalog.list()
        await context.send_initial_metadata(
            (("x-crosscompute-model-catalog", "local"), ("x-crosscompute-model-count", str(len(entries))))
        )
        return pb.ListModelsResponse(
            object="list", data=[model(entry, self._credits_per_usd) for entry in entries]
        )

    async def GetModel(self, request: pb.GetModelRequest, context: Context) -> pb.Model:
        await self._authenticator.authenticate(bearer_token(context))
        entry = self._catalog.get(request.model_id)
        if entry is None:
            raise NotFound(
                f"The model `{request.model_id[:200]}` does not exist.",
                reason="MODEL_NOT_FOUND",
                param="model",
            )
        return model(entry, self._credits_per_usd)

    async def CreateChatCompletion(
        self, request: pb.CreateChatCompletionRequest, context: Context
    ) -> AsyncIterator[pb.CreateChatCompletionResponse]:
        principal = await self._authenticator.authenticate(bearer_token(context))
        call = await self._chat.start(principal, request.body.data)
        async for body in answer_bodies(call, context):
            yield pb.CreateChatCompletionResponse(body=body)
