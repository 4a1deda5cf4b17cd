"""One chat completion, end to end: validate, resolve the model, hold the worst case, call the
provider, settle the real cost, and answer with headers that explain what happened."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import orjson

from server.db.repositories.cooldowns import CooldownRepository
from server.db.repositories.usage import UsageRepository
from server.domain.catalog import ALIASES, PROFILE_NAMES, SIMULATOR, Catalog, ModelSpec
from server.domain.chat.billing import Hold, bill, plan_hold
from server.domain.chat.failures import domain_error
from server.domain.chat.lease import LeaseRenewal
from server.domain.chat.relay import Finished, RelayBilling, StreamRelay
from server.domain.chat.tokens import count_prompt, count_text, hold_for_prompt
from server.domain.conversation import (
    Answer,
    AnswerEvent,
    Billed,
    CallInfo,
    Conversation,
    Rendering,
)
from server.domain.credits import micro_to_credits
from server.domain.errors import DomainError, InvalidArgument, NotFound, PaymentRequired, ServiceUnavailable
from server.domain.holds import ABANDONED, Billing, Held, HoldRequest, Refused, Settlement, UsageFacts
from server.domain.key_auth import KeyPrincipal
from server.domain.providers.base import ProviderClient, UpstreamError, Usage
from server.domain.routing.router import Route, Router
from server.domain.uninterrupted import detached, shielded
from server.domain.wire import chat_completions, messages
from server.observability import COOLDOWNS, CREDITS, FALLBACKS, TOKENS, UNBILLED, UPSTREAM_ERRORS

logger = logging.getLogger(__name__)


@dataclass
class ChatCall:
    """The answer: response headers, then one JSON body or a stream of SSE chunks, in the caller's
    API. Whoever gets one must `aclose` it, however the response goes: a stream that never started
    gives its hold back. A plain answer also keeps its typed `answer` and `billed`."""

    headers: list[tuple[str, str]]
    info: CallInfo
    body: bytes | None = None
    relay: StreamRelay | None = None
    answer: Answer | None = None
    billed: Billed | None = None

    @property
    def chunks(self) -> AsyncIterator[bytes] | None:
        return self.relay.chunks if self.relay is not None else None

    async def aclose(self) -> None:
        """Idempotent. A plain answer is settled already; a stream is closed (see `StreamRelay`)."""
        if self.relay is not None:
            await self.relay.aclose()


@dataclass
class _Closing:
    """Whether an attempt has begun to close the call itself (then a failure must not release it)."""

    begun: bool = False


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


class ChatService:
    """Conversations, in any API, for explicit models and routing profiles."""

    def __init__(
        self,
        catalog: Catalog,
        clients: Mapping[str, ProviderClient],
        billing: Billing,
        usage: UsageRepository,
        credits_per_usd: Decimal,
        default_output: int,
        router: Router,
        cooldowns: CooldownRepository,
        lease_seconds: float,
    ) -> None:
        self._catalog = catalog
        self._default_output = default_output
        self._router = router
        self._cooldowns = cooldowns
        self._max_attempts = catalog.routing.max_attempts
        self._clients = clients
        self._billing = billing
        self._usage = usage
        self._credits_per_usd = credits_per_usd
        self._lease_seconds = lease_seconds

    async def start(self, principal: KeyPrincipal, raw: bytes) -> ChatCall:
        """A Chat Completions request, answered in Chat Completions' shapes."""
        request = chat_completions.parse(raw)
        return await self.converse(
            principal, request, chat_completions.ChatCompletions(request.include_usage)
        )

    async def start_message(self, principal: KeyPrincipal, raw: bytes) -> ChatCall:
        """An Anthropic Messages request, answered in the Messages API's shapes."""
        return await self.converse(principal, messages.parse(raw), messages.Messages())

    def count_message_tokens(self, raw: bytes) -> bytes:
        """`{"input_tokens": N}` for a Messages count_tokens body: the prompt as this gateway
        counts it before a call (cl100k over everything sent upstream, framing included)."""
        request = messages.parse(raw, counting=True)
        model = ALIASES.get(request.model, request.model)
        entry = self._catalog.get(model)
        if model not in PROFILE_NAMES and (entry is None or entry.spec is None):
            raise NotFound(
                f"The model `{request.model[:200]}` does not exist or its provider is not configured.",
                reason="MODEL_NOT_FOUND",
                param="model",
            )
        return orjson.dumps({"input_tokens": count_prompt(request.messages, request.options)})

    async def converse(
        self,
        principal: KeyPrincipal,
        request: Conversation,
        rendering: Rendering,
        finished: Finished | None = None,
    ) -> ChatCall:
        """Route, hold, call (falling back), settle, and answer as `rendering` writes it. A stream
        tells `finished` what it delivered once it is billed."""
        counted_prompt = count_prompt(request.messages, request.options)
        prompt_tokens = hold_for_prompt(counted_prompt)
        route = await self._router.route(request, prompt_tokens)
        call_id = str(uuid.uuid4())
        renewal = LeaseRenewal(self._lease_seconds)
        attempts = await self._hold(call_id, principal, request, route, prompt_tokens)
        closing = _Closing()
        try:
            return await self._attempt(
                call_id, request, route, attempts, counted_prompt, renewal, closing, rendering, finished
            )
        except asyncio.CancelledError:
            # The caller left before any answer: the hold goes back whole.
            if not closing.begun:
                await shielded(self._billing.release(call_id, ABANDONED, status="released"))
            raise
        except BaseException:
            if not closing.begun:
                await shielded(self._billing.release(call_id, "failed"))
            raise

    async def _hold(
        self, call_id: str, principal: KeyPrincipal, request: Conversation, route: Route, prompt_tokens: int
    ) -> list[tuple[ModelSpec, Hold]]:
        """Hold the worst case, or raise PaymentRequired. Held first as if credits were plenty (one
        database round trip); only when that is refused and the caller set no `max_tokens` is the
        output cap fitted to what the key can spend."""
        attempts = self._plan(route, request, prompt_tokens, spendable=None)
        outcome = await self._reserve(call_id, principal, request, route, attempts)
        if isinstance(outcome, Refused) and request.max_output_tokens is None:
            spendable = (await self._usage.spendable(principal.key_id)).micro
            attempts = self._plan(route, request, prompt_tokens, spendable=spendable)
            outcome = await self._reserve(call_id, principal, request, route, attempts)
        if isinstance(outcome, Refused):
            raise outcome.error()
        return attempts

    def _plan(
        self, route: Route, request: Conversation, prompt_tokens: int, spendable: int | None
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
        request: Conversation,
        route: Route,
        attempts: list[tuple[ModelSpec, Hold]],
    ) -> Held | Refused:
        """Take the hold so that a caller leaving meanwhile cannot leave it behind: the statement
        runs to its end, and a hold it took is given back."""
        hold = HoldRequest(
            call_id=call_id,
            account_id=principal.account_id,
            key_id=principal.key_id,
            amount_micro=max(planned.amount_micro for _spec, planned in attempts),
            requested_model=request.model,
            stream=request.stream,
            routing_profile=route.profile,
        )
        taking = detached(self._billing.reserve(hold))
        try:
            return await asyncio.shield(taking)
        except asyncio.CancelledError:
            await shielded(self._give_back(taking, call_id))
            raise

    async def _give_back(self, taking: asyncio.Future[Held | Refused], call_id: str) -> None:
        """Once the hold a departed caller asked for is taken, release it."""
        try:
            outcome = await taking
        except Exception:
            return  # the hold failed: nothing to give back
        if isinstance(outcome, Held):
            await self._billing.release(call_id, ABANDONED, status="released")

    async def _attempt(
        self,
        call_id: str,
        request: Conversation,
        route: Route,
        attempts: list[tuple[ModelSpec, Hold]],
        counted_prompt: int,
        renewal: LeaseRenewal,
        closing: _Closing,
        rendering: Rendering,
        finished: Finished | None,
    ) -> ChatCall:
        """Try the candidates in order until one answers; only a failure before any byte falls back."""
        last_error: UpstreamError | None = None
        for number, (spec, hold) in enumerate(attempts, start=1):
            client = self._clients[spec.provider]
            info = CallInfo(call_id, spec.id, spec.price_rule, int(time.time()), counted_prompt)
            try:
                if not request.stream:
                    answer = await client.complete(spec, request, hold.max_output)
                    usage = answer.usage or Usage(counted_prompt, count_text(produced_text(answer)))
                    # From here the settlement closes the call, even if the caller leaves meanwhile.
                    closing.begun = True
                    settlement = await shielded(self._settle(call_id, spec, usage, route))
                    billed = Billed(usage, settlement.billed_micro)
                    credits = micro_to_credits(settlement.billed_micro).normalize()
                    headers = [*self._headers(route, spec), ("x-crosscompute-billed-credits", f"{credits:f}")]
                    return ChatCall(
                        headers=headers,
                        info=info,
                        body=rendering.body(info, answer, billed),
                        answer=answer,
                        billed=billed,
                    )
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
                info=info,
                relay=self._relay(info, spec, rendering, first, stream, route, renewal, finished),
            )
        assert last_error is not None
        if len(attempts) > 1 and last_error.kind in FALLBACK_KINDS:
            raise ServiceUnavailable(
                f"Every candidate failed ({len(attempts)} tried); retry shortly.",
                reason="ALL_PROVIDERS_FAILED",
            )
        raise domain_error(last_error)

    def _relay(
        self,
        info: CallInfo,
        spec: ModelSpec,
        rendering: Rendering,
        first: AnswerEvent,
        stream: AsyncIterator[AnswerEvent],
        route: Route,
        renewal: LeaseRenewal,
        finished: Finished | None,
    ) -> StreamRelay:
        call_id = info.call_id

        async def settle(usage: Usage) -> Settlement:
            return await self._settle(call_id, spec, usage, route)

        async def abandon() -> None:
            await self._billing.release(call_id, ABANDONED, status="released")

        async def renew() -> bool:
            return await self._billing.renew(call_id)

        return StreamRelay(
            call_id=call_id,
            counted_prompt=info.counted_prompt,
            writer=rendering.stream(info),
            first=first,
            upstream=stream,
            billing=RelayBilling(settle=settle, abandon=abandon, renew=renew, renewal=renewal),
            finished=finished,
        )

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

    async def _settle(self, call_id: str, spec: ModelSpec, usage: Usage, route: Route) -> Settlement:
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
        cost = bill(spec, self._credits_per_usd, usage)
        settlement = await self._billing.settle(call_id, cost, facts)
        if not settlement.closed_now:
            logger.warning(
                "call %s was closed before it could be billed %d micro-credits",
                call_id,
                cost,
                extra={"call_id": call_id, "model": spec.id, "cost_micro": cost},
            )
            return settlement
        TOKENS.labels(spec.id, "input").inc(usage.input_tokens)
        TOKENS.labels(spec.id, "output").inc(usage.output_tokens)
        CREDITS.labels(spec.id).inc(settlement.billed_micro)
        if settlement.unbilled_micro:
            UNBILLED.labels(spec.id).inc(settlement.unbilled_micro)
            logger.warning(
                "call %s cost %d micro-credits more than its key and account could pay",
                call_id,
                settlement.unbilled_micro,
                extra={
                    "call_id": call_id,
                    "model": spec.id,
                    "cost_micro": cost,
                    "billed_micro": settlement.billed_micro,
                    "unbilled_micro": settlement.unbilled_micro,
                },
            )
        return settlement


def produced_text(answer: Answer) -> str:
    """What a provider that reported no usage wrote, as its output tokens are counted."""
    calls = "".join(call.name + call.arguments for call in answer.tool_calls)
    return answer.reasoning + answer.text + calls
