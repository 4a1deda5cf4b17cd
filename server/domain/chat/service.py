"""One chat completion, end to end: validate, resolve the model, hold the worst case, call the
provider, settle the real cost, and answer with headers that explain what happened."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

import orjson

from server.db.repositories.cooldowns import CooldownRepository
from server.db.repositories.usage import UsageFacts, UsageRepository
from server.domain.catalog import SIMULATOR, Catalog, ModelSpec
from server.domain.chat.billing import Hold, bill, plan_hold
from server.domain.chat.request import ChatRequest, parse_body, validate
from server.domain.chat.tokens import count_prompt, count_text, hold_for_prompt
from server.domain.credits import micro_to_credits, micro_to_wire
from server.domain.errors import (
    DomainError,
    InvalidArgument,
    PaymentRequired,
    ServiceUnavailable,
    UpstreamFailed,
    UpstreamTimeout,
)
from server.domain.key_auth import KeyPrincipal
from server.domain.providers.base import ProviderClient, UpstreamError, Usage
from server.domain.providers.openai_compat import usage_of
from server.domain.routing.router import Route, Router
from server.observability import COOLDOWNS, CREDITS, FALLBACKS, TOKENS, UPSTREAM_ERRORS

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


#: Failures before any byte reached the client that try the next candidate (a 400 is the request's fault).
FALLBACK_KINDS = frozenset({"auth", "rate_limited", "overloaded", "server", "timeout", "connect", "protocol"})
#: How long a model rests after each kind of failure, on every replica.
COOL_DOWNS = {
    "rate_limited": timedelta(seconds=60),
    "overloaded": timedelta(seconds=15),
    "server": timedelta(seconds=15),
    "timeout": timedelta(seconds=15),
    "connect": timedelta(seconds=15),
}


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
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class ChatService:
    """Chat completions for explicit models (routing profiles come with the router)."""

    def __init__(
        self,
        catalog: Catalog,
        clients: Mapping[str, ProviderClient],
        usage: UsageRepository,
        credits_per_usd: Decimal,
        default_output: int,
        router: Router,
        cooldowns: CooldownRepository,
    ) -> None:
        self._default_output = default_output
        self._router = router
        self._cooldowns = cooldowns
        self._max_attempts = catalog.routing.max_attempts
        self._clients = clients
        self._usage = usage
        self._credits_per_usd = credits_per_usd

    async def start(self, principal: KeyPrincipal, raw: bytes) -> ChatCall:
        request = validate(parse_body(raw))
        counted_prompt = count_prompt(request.messages, request.options)
        prompt_tokens = hold_for_prompt(counted_prompt)
        route = await self._router.route(request, prompt_tokens)
        call_id = str(uuid.uuid4())
        # Hold first as if credits were plenty (one database round trip); only when that is refused
        # and the caller set no `max_tokens` is the output cap fitted to what the key can spend.
        attempts = self._plan(route, request, prompt_tokens, spendable=None)
        try:
            await self._reserve(call_id, principal, request, route, attempts)
        except PaymentRequired:
            if request.max_output_tokens is not None:
                raise
            spendable = (await self._usage.spendable(principal.key_id)).micro
            attempts = self._plan(route, request, prompt_tokens, spendable=spendable)
            await self._reserve(call_id, principal, request, route, attempts)
        try:
            return await self._attempt(call_id, request, route, attempts, counted_prompt)
        except BaseException:
            await asyncio.shield(self._usage.release(call_id, "failed"))
            raise

    def _plan(
        self, route: Route, request: ChatRequest, prompt_tokens: int, spendable: int | None
    ) -> list[tuple[ModelSpec, Hold]]:
        """Each candidate with its worst case. One hold covers whichever attempt answers: the
        largest of the attempts' worst cases."""
        attempts: list[tuple[ModelSpec, Hold]] = []
        refusal: DomainError | None = None
        for spec in route.candidates[: self._max_attempts]:
            try:
                hold = plan_hold(
                    spec,
                    self._credits_per_usd,
                    prompt_tokens,
                    request.max_output_tokens,
                    spendable,
                    self._default_output,
                )
            except (PaymentRequired, InvalidArgument) as error:
                refusal = refusal or error
                continue
            attempts.append((spec, hold))
        if not attempts:
            assert refusal is not None
            raise refusal
        return attempts

    async def _reserve(
        self,
        call_id: str,
        principal: KeyPrincipal,
        request: ChatRequest,
        route: Route,
        attempts: list[tuple[ModelSpec, Hold]],
    ) -> None:
        await self._usage.reserve(
            call_id=call_id,
            account_id=principal.account_id,
            key_id=principal.key_id,
            amount_micro=max(hold.amount_micro for _spec, hold in attempts),
            requested_model=request.model,
            stream=request.stream,
            routing_profile=route.profile,
        )

    async def _attempt(
        self,
        call_id: str,
        request: ChatRequest,
        route: Route,
        attempts: list[tuple[ModelSpec, Hold]],
        counted_prompt: int,
    ) -> ChatCall:
        """Try the candidates in order until one answers; only a failure before any byte falls back."""
        last_error: UpstreamError | None = None
        for number, (spec, hold) in enumerate(attempts, start=1):
            client = self._clients[spec.provider]
            try:
                if not request.stream:
                    completion = await client.complete(spec, request, hold.max_output)
                    usage = completion.usage or Usage(
                        counted_prompt, count_text(json.dumps(completion.body["choices"]))
                    )
                    billed = await self._settle(call_id, spec, usage, route)
                    body = {**completion.body, "model": spec.id}
                    headers = [
                        *self._headers(route, spec),
                        ("x-crosscompute-billed-credits", f"{micro_to_credits(billed).normalize():f}"),
                    ]
                    return ChatCall(headers=headers, body=orjson.dumps(body))
                stream = client.stream(spec, request, hold.max_output)
                try:
                    first = await anext(stream)
                except StopAsyncIteration:
                    raise UpstreamError("protocol", "empty stream") from None
            except UpstreamError as error:
                last_error = error
                UPSTREAM_ERRORS.labels(spec.provider, error.kind).inc()
                logger.warning(
                    "attempt %d: %s via %s failed: %s",
                    number,
                    spec.id,
                    spec.provider,
                    error.kind,
                    extra={
                        "model": spec.id,
                        "provider": spec.provider,
                        "attempt": number,
                        "outcome": error.kind,
                    },
                )
                await self._cool_down(spec, error)
                if error.kind not in FALLBACK_KINDS:
                    break
                FALLBACKS.labels(spec.id).inc()
                continue
            logger.info(
                "attempt %d: %s answered", number, spec.id, extra={"model": spec.id, "attempt": number}
            )
            return ChatCall(
                headers=self._headers(route, spec),
                chunks=self._relay(call_id, spec, request, first, stream, counted_prompt, route),
            )
        assert last_error is not None
        if len(attempts) > 1 and last_error.kind in FALLBACK_KINDS:
            raise ServiceUnavailable(
                f"Every candidate failed ({len(attempts)} tried); retry shortly.",
                reason="ALL_PROVIDERS_FAILED",
            )
        raise domain_error(last_error)

    async def _cool_down(self, spec: ModelSpec, error: UpstreamError) -> None:
        rest = COOL_DOWNS.get(error.kind)
        if rest is not None:
            COOLDOWNS.labels(spec.id, error.kind).inc()
            await self._cooldowns.rest(spec.id, rest, error.kind)

    def _headers(self, route: Route, spec: ModelSpec) -> list[tuple[str, str]]:
        headers = [("x-crosscompute-routing-profile", route.profile)]
        if not route.explicit:
            headers += [
                ("x-crosscompute-routing-tier", route.tier),
                ("x-crosscompute-routing-budget", route.budget),
                ("x-crosscompute-routing-version", route.version),
                ("x-crosscompute-routing-intelligence", route.intelligence),
            ]
            if route.session_id:
                headers.append(("x-crosscompute-routing-intelligence-session", route.session_id))
            if route.request_id:
                headers.append(("x-crosscompute-routing-intelligence-request-id", route.request_id))
        headers += [
            ("x-crosscompute-provider", spec.provider),
            ("x-crosscompute-routed-model", spec.id),
            ("x-crosscompute-price-rule", spec.price_rule),
        ]
        if spec.provider == SIMULATOR:
            headers.append(("x-crosscompute-simulated", "true"))
        return headers

    async def _settle(self, call_id: str, spec: ModelSpec, usage: Usage, route: Route) -> int:
        facts = UsageFacts(
            model=spec.id,
            provider=spec.provider,
            price_rule=spec.price_rule,
            input_tokens=usage.input_tokens,
            cached_input_tokens=usage.cached_tokens,
            output_tokens=usage.output_tokens,
            routing_tier=route.tier or None,
            routing_budget=route.budget or None,
            routing_intelligence=None if route.explicit else route.intelligence,
        )
        billed = await self._usage.settle(call_id, bill(spec, self._credits_per_usd, usage), facts)
        TOKENS.labels(spec.id, "input").inc(usage.input_tokens)
        TOKENS.labels(spec.id, "output").inc(usage.output_tokens)
        CREDITS.labels(spec.id).inc(billed)
        return billed

    async def _relay(
        self,
        call_id: str,
        spec: ModelSpec,
        request: ChatRequest,
        first: dict[str, Any],
        stream: AsyncIterator[dict[str, Any]],
        counted_prompt: int,
        route: Route,
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
            billed = await self._settle(call_id, spec, usage, route)
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
            await self._settle(call_id, spec, produced.counted(counted_prompt), route)
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
            await self._settle(call_id, spec, produced.counted(counted_prompt), route)
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
                await asyncio.shield(self._settle(call_id, spec, produced.counted(counted_prompt), route))
            await stream.aclose()  # type: ignore[attr-defined]
