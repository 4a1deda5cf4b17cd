"""One chat completion, end to end: validate, resolve the model, hold the worst case, call the
provider, settle the real cost, and answer with headers that explain what happened."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from server.db.repositories.usage import UsageFacts, UsageRepository
from server.domain.catalog import SIMULATOR, Catalog, ModelSpec
from server.domain.chat.billing import bill, plan_hold
from server.domain.chat.request import ChatRequest, parse_body, validate
from server.domain.chat.tokens import count_prompt, count_text, hold_for_prompt
from server.domain.credits import micro_to_credits, micro_to_wire
from server.domain.errors import (
    DomainError,
    InvalidArgument,
    NotFound,
    NotImplementedYet,
    ServiceUnavailable,
    UpstreamFailed,
    UpstreamTimeout,
)
from server.domain.key_auth import KeyPrincipal
from server.domain.providers.base import ProviderClient, UpstreamError, Usage
from server.domain.providers.openai_compat import usage_of

logger = logging.getLogger(__name__)


@dataclass
class ChatCall:
    """The answer: response headers, then one JSON body or a stream of SSE chunks."""

    headers: list[tuple[str, str]]
    body: bytes | None = None
    chunks: AsyncIterator[bytes] | None = None


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


def domain_error(error: UpstreamError) -> DomainError:
    """How a provider's failure reaches our caller (never with the provider's credentials or URL)."""
    if error.kind == "bad_request":
        return InvalidArgument(error.message, reason="UPSTREAM_BAD_REQUEST")
    if error.kind == "auth":
        return UpstreamFailed(
            "The provider refused the gateway's credentials.", reason="PROVIDER_AUTH_FAILED"
        )
    if error.kind == "rate_limited":
        return ServiceUnavailable(
            "The provider is rate limiting; retry shortly.", reason="PROVIDER_RATE_LIMITED"
        )
    if error.kind == "overloaded":
        return ServiceUnavailable("The provider is overloaded; retry shortly.", reason="PROVIDER_OVERLOADED")
    if error.kind == "timeout":
        return UpstreamTimeout("The provider did not answer in time.", reason="PROVIDER_TIMEOUT")
    if error.kind == "connect":
        return UpstreamFailed("The provider could not be reached.", reason="PROVIDER_UNREACHABLE")
    return UpstreamFailed("The provider failed to answer.", reason="PROVIDER_ERROR")


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


class ChatService:
    """Chat completions for explicit models (routing profiles come with the router)."""

    def __init__(
        self,
        catalog: Catalog,
        clients: Mapping[str, ProviderClient],
        usage: UsageRepository,
        credits_per_usd: Decimal,
        default_output: int,
    ) -> None:
        self._default_output = default_output
        self._catalog = catalog
        self._clients = clients
        self._usage = usage
        self._credits_per_usd = credits_per_usd

    def _resolve(self, request: ChatRequest) -> ModelSpec:
        entry = self._catalog.get(request.model)
        if entry is None:
            raise NotFound(
                f"The model `{request.model}` does not exist or its provider is not configured; "
                "see /v1/models.",
                reason="MODEL_NOT_FOUND",
                param="model",
            )
        if entry.spec is None:
            raise NotImplementedYet(
                f"Routing profile `{entry.id}` is not implemented yet: name a model from /v1/models.",
                reason="ROUTING_NOT_IMPLEMENTED",
            )
        spec = entry.spec
        if request.has_tools and not spec.tools:
            raise InvalidArgument(
                f"{spec.id} does not support tools.", param="tools", reason="MODEL_LACKS_TOOLS"
            )
        if request.has_images and not spec.vision:
            raise InvalidArgument(
                f"{spec.id} does not accept images.", param="messages", reason="MODEL_LACKS_VISION"
            )
        return spec

    async def start(self, principal: KeyPrincipal, raw: bytes) -> ChatCall:
        request = validate(parse_body(raw))
        spec = self._resolve(request)
        counted_prompt = count_prompt(request.messages, request.options)
        prompt_tokens = hold_for_prompt(counted_prompt)
        spendable = 0
        if request.max_output_tokens is None:
            spendable = (await self._usage.spendable(principal.key_id)).micro
        hold = plan_hold(
            spec,
            self._credits_per_usd,
            prompt_tokens,
            request.max_output_tokens,
            spendable,
            self._default_output,
        )
        call_id = str(uuid.uuid4())
        await self._usage.reserve(
            call_id=call_id,
            account_id=principal.account_id,
            key_id=principal.key_id,
            amount_micro=hold.amount_micro,
            requested_model=request.model,
            stream=request.stream,
            routing_profile="explicit",
        )
        headers = [
            ("x-crosscompute-routing-profile", "explicit"),
            ("x-crosscompute-provider", spec.provider),
            ("x-crosscompute-routed-model", spec.id),
            ("x-crosscompute-price-rule", spec.price_rule),
        ]
        if spec.provider == SIMULATOR:
            headers.append(("x-crosscompute-simulated", "true"))
        client = self._clients[spec.provider]
        try:
            if not request.stream:
                completion = await client.complete(spec, request, hold.max_output)
                usage = completion.usage or Usage(
                    counted_prompt, count_text(json.dumps(completion.body["choices"]))
                )
                billed = await self._settle(call_id, spec, usage)
                body = {**completion.body, "model": spec.id}
                headers.append(("x-crosscompute-billed-credits", f"{micro_to_credits(billed).normalize():f}"))
                return ChatCall(headers=headers, body=json.dumps(body, separators=(",", ":")).encode())
            stream = client.stream(spec, request, hold.max_output)
            first = await anext(stream)
        except UpstreamError as error:
            await self._usage.release(call_id, error.kind)
            logger.warning(
                "upstream %s failed: %s", spec.provider, error.kind, extra={"provider": spec.provider}
            )
            raise domain_error(error) from None
        except StopAsyncIteration:
            await self._usage.release(call_id, "protocol")
            raise domain_error(UpstreamError("protocol", "empty stream")) from None
        except BaseException:
            await asyncio.shield(self._usage.release(call_id, "cancelled"))
            raise
        return ChatCall(
            headers=headers, chunks=self._relay(call_id, spec, request, first, stream, counted_prompt)
        )

    async def _settle(self, call_id: str, spec: ModelSpec, usage: Usage) -> int:
        facts = UsageFacts(
            model=spec.id,
            provider=spec.provider,
            price_rule=spec.price_rule,
            input_tokens=usage.input_tokens,
            cached_input_tokens=usage.cached_tokens,
            output_tokens=usage.output_tokens,
        )
        return await self._usage.settle(call_id, bill(spec, self._credits_per_usd, usage), facts)

    async def _relay(
        self,
        call_id: str,
        spec: ModelSpec,
        request: ChatRequest,
        first: dict[str, Any],
        stream: AsyncIterator[dict[str, Any]],
        counted_prompt: int,
    ) -> AsyncIterator[bytes]:
        """Forward the stream chunk by chunk; bill it once however it ends."""
        produced = Produced()
        settled = False
        chunk: dict[str, Any] | None = first
        last: dict[str, Any] = first
        try:
            while chunk is not None:
                produced.add(chunk)
                last = chunk
                if chunk.get("choices"):
                    yield sse({**chunk, "model": spec.id})
                chunk = await anext(stream, None)
            usage = produced.counted(counted_prompt)
            billed = await self._settle(call_id, spec, usage)
            settled = True
            if request.include_usage:
                yield sse(
                    {
                        "id": last.get("id", ""),
                        "object": "chat.completion.chunk",
                        "created": last.get("created", 0),
                        "model": spec.id,
                        "choices": [],
                        "usage": {
                            "prompt_tokens": usage.input_tokens,
                            "completion_tokens": usage.output_tokens,
                            "total_tokens": usage.input_tokens + usage.output_tokens,
                            "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
                        },
                        "crosscompute": {
                            "billed_credits": micro_to_wire(billed),
                            "price_rule": spec.price_rule,
                        },
                    }
                )
            yield b"data: [DONE]\n\n"
        except UpstreamError as error:
            await self._settle(call_id, spec, produced.counted(counted_prompt))
            settled = True
            mapped = domain_error(error)
            logger.warning("upstream %s failed mid-stream: %s", spec.provider, error.kind)
            yield sse(
                {
                    "error": {
                        "message": mapped.message,
                        "type": "api_error",
                        "code": mapped.reason.lower(),
                        "param": None,
                    }
                }
            )
        except Exception:
            # Headers are gone: a failure of ours is also reported in-band, never as a silent end.
            logger.exception("stream relay failed")
            await self._settle(call_id, spec, produced.counted(counted_prompt))
            settled = True
            yield sse(
                {
                    "error": {
                        "message": "internal error",
                        "type": "api_error",
                        "code": "internal",
                        "param": None,
                    }
                }
            )
        finally:
            if not settled:
                # The client went away (or the server is stopping): bill what was produced, once.
                await asyncio.shield(self._settle(call_id, spec, produced.counted(counted_prompt)))
            await stream.aclose()  # type: ignore[attr-defined]
