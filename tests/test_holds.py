"""Holds that cannot leak, through the real Envoy on SQLite and PostgreSQL: a stream abandoned before
it starts gives its hold back at once, a live stream is never swept however old it is, an abandoned
hold is swept once its lease passes, and a live stream renews its lease as it relays."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

import grpc
import httpx
import openai
import pytest

from server.db.models import UsageRecord, as_utc, utcnow
from server.domain.catalog import load_catalog_file
from server.domain.chat.billing import bill
from server.domain.holds import ABANDONED, LEASE_EXPIRED, Billing, HoldRequest
from server.domain.providers.base import Usage
from server.domain.sweeper import sweep_once
from server.interceptors.wrapping import Context, ServerInterceptor
from server.settings import Settings
from tests.conftest import gateway_settings
from tests.support.fake_provider import COMPLETION_TOKENS, PROMPT_TOKENS, WORDS, FakeProvider
from tests.support.gateway import Gateway, MethodRecorder, ServerThread, envoy_for
from tests.support.hangups import hang_up_after
from tests.support.money import KeyBooks
from tests.support.people import Person, sign_in
from tests.support.supabase import SupabaseStandIn
from tests.support.waiting import eventually

MODEL = "openai/gpt-5-mini"
FAULT_HEADER = "x-test-initial-metadata"


class InitialMetadataFaults(ServerInterceptor):
    """Makes CreateChatCompletion's `send_initial_metadata` fail when the request asks for it with
    `x-test-initial-metadata`: `raise` raises, `hang` never returns (until the call is cancelled)."""

    def __init__(self) -> None:
        self.hanging = threading.Event()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        metadata = dict(handler_call_details.invocation_metadata or ())
        mode = metadata.get(FAULT_HEADER)
        if handler is None or handler.unary_stream is None or not mode:
            return handler
        behaviour = handler.unary_stream
        hanging = self.hanging

        def run(request: Any, context: Context) -> Any:
            return behaviour(request, cast(Any, FaultyContext(context, str(mode), hanging)))

        return grpc.unary_stream_rpc_method_handler(
            run,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class FaultyContext:
    """A servicer context whose `send_initial_metadata` fails; everything else is the real one."""

    def __init__(self, context: Context, mode: str, hanging: threading.Event) -> None:
        self._context = context
        self._mode = mode
        self._hanging = hanging

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    async def send_initial_metadata(self, metadata: Any) -> None:
        if self._mode == "raise":
            raise RuntimeError("the response headers could not be sent")
        self._hanging.set()
        await asyncio.Event().wait()  # until the call is cancelled


@contextmanager
def gateway_with(settings: Settings, *interceptors: ServerInterceptor) -> Iterator[Gateway]:
    """Like `running_gateway`, with extra interceptors on the gRPC server."""
    recorder = MethodRecorder()
    server = ServerThread(settings, [recorder, *interceptors])
    runtime = server.start()
    envoy = envoy_for(runtime.port, settings)
    try:
        ports = envoy.start()
        yield Gateway(
            settings=settings,
            base_url=f"http://127.0.0.1:{ports.http}",
            grpc_target=f"127.0.0.1:{runtime.port}",
            backend=runtime.database.backend,
            recorder=recorder,
            server=server,
            envoy=envoy,
        )
    finally:
        envoy.stop()
        server.stop()


def fake_settings(database_url: str, supabase: SupabaseStandIn, fake: FakeProvider, **extra: str) -> Settings:
    return gateway_settings(
        database_url,
        supabase,
        OPENAI_API_KEY="sk-fake-openai",
        OPENAI_BASE_URL=f"{fake.url}/v1",
        CROSSCOMPUTE_UPSTREAM_TIMEOUT_SECONDS="20",
        **extra,
    )


@pytest.fixture(scope="module")
def faults() -> InitialMetadataFaults:
    return InitialMetadataFaults()


@pytest.fixture(scope="module")
def gateway(
    database_url: str, supabase: SupabaseStandIn, fake: FakeProvider, faults: InitialMetadataFaults
) -> Iterator[Gateway]:
    with gateway_with(fake_settings(database_url, supabase, fake), faults) as running:
        yield running


@pytest.fixture
def person(gateway: Gateway, supabase: SupabaseStandIn) -> Iterator[Person]:
    with httpx.Client(base_url=gateway.base_url, timeout=30) as client:
        yield sign_in(gateway, supabase, client)


@dataclass
class Caller:
    """A signed-in person's default key, and what storage says about it."""

    secret: str
    client: openai.OpenAI
    books: KeyBooks


@pytest.fixture
def caller(gateway: Gateway, person: Person) -> Iterator[Caller]:
    boot = person.bootstrap()
    with person.openai(boot["apiKey"]) as client:
        yield Caller(boot["apiKey"], client, KeyBooks(gateway.settings, boot["key"]["id"]))


def billing_of(gateway: Gateway) -> Billing:
    runtime = gateway.server.runtime
    assert runtime is not None and runtime.billing is not None
    return runtime.billing


def full_answer_micro(settings: Settings) -> int:
    """What the fake's whole answer costs on MODEL at catalog prices."""
    spec = next(m for m in load_catalog_file(settings.catalog_file).models if m.id == MODEL)
    return bill(spec, settings.credits_per_usd_decimal, Usage(PROMPT_TOKENS, COMPLETION_TOKENS))


def assert_untouched(caller: Caller, signup_micro: int) -> None:
    """Nothing held, nothing billed: the key and the account are where they started."""
    assert caller.books.open_records() == []
    assert caller.books.key_used() == 0
    assert caller.books.balance_and_ledger() == (signup_micro, signup_micro)


def stream_body(content: str) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "stream": True,
        "max_tokens": 50,
    }


def hang_up_once(
    gateway: Gateway, secret: str, body: dict[str, Any], ready: Callable[[], object], **headers: str
) -> None:
    """A chat request through Envoy whose client leaves, once `ready`, before the response headers."""
    hang_up_after(
        gateway, "/v1/chat/completions", body, ready, {"Authorization": f"Bearer {secret}", **headers}
    )


def the_one_call(caller: Caller, ids_before: set[str]) -> str:
    (call_id,) = [record.id for record in caller.books.records() if record.id not in ids_before]
    return call_id


def closed(caller: Caller, call_id: str) -> UsageRecord | None:
    record = caller.books.record(call_id)
    return record if record.status != "reserved" else None


def test_a_stream_whose_headers_cannot_be_sent_gives_its_hold_back_at_once(
    gateway: Gateway, caller: Caller
) -> None:
    before = {record.id for record in caller.books.records()}
    with pytest.raises(openai.InternalServerError):
        caller.client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Hi"}],
            max_tokens=50,
            stream=True,
            extra_headers={FAULT_HEADER: "raise"},
        )
    # Right after the answer: the relay never started, so the call was released before it ended.
    record = caller.books.record(the_one_call(caller, before))
    assert (record.status, record.error_code, record.billed_micro) == ("released", ABANDONED, 0)
    assert caller.books.entries(record.id) == {
        f"usage:{record.id}:hold": -record.reserved_micro,
        f"usage:{record.id}:return": record.reserved_micro,
    }
    assert_untouched(caller, gateway.settings.signup_micro)


def test_a_client_that_leaves_while_the_headers_wait_gives_the_hold_back_and_closes_upstream(
    gateway: Gateway, caller: Caller, fake: FakeProvider, faults: InitialMetadataFaults
) -> None:
    faults.hanging.clear()
    fake.release_slow.clear()
    disconnects = fake.disconnects
    before = {record.id for record in caller.books.records()}
    try:
        hang_up_once(
            gateway, caller.secret, stream_body("[slow]"), faults.hanging.is_set, **{FAULT_HEADER: "hang"}
        )
        call_id = the_one_call(caller, before)
        record = eventually(lambda: closed(caller, call_id), what="the abandoned call to be closed")
    finally:
        fake.release_slow.set()
    assert (record.status, record.error_code, record.billed_micro) == ("released", ABANDONED, 0)
    eventually(lambda: fake.disconnects > disconnects, what="the provider's stream to be closed")
    assert_untouched(caller, gateway.settings.signup_micro)


def test_a_client_that_leaves_before_the_provider_answers_gives_the_hold_back(
    gateway: Gateway, caller: Caller, fake: FakeProvider
) -> None:
    fake.release_slow.clear()
    arrived = len(fake.received)
    before = {record.id for record in caller.books.records()}
    try:
        hang_up_once(gateway, caller.secret, stream_body("[hang]"), lambda: len(fake.received) > arrived)
        call_id = the_one_call(caller, before)
        record = eventually(lambda: closed(caller, call_id), what="the abandoned call to be closed")
    finally:
        fake.release_slow.set()
    assert (record.status, record.error_code, record.billed_micro) == ("released", ABANDONED, 0)
    assert_untouched(caller, gateway.settings.signup_micro)


def test_a_live_stream_older_than_any_cutoff_is_not_swept_and_is_billed_in_full(
    gateway: Gateway, caller: Caller, fake: FakeProvider
) -> None:
    fake.release_slow.clear()
    try:
        stream = caller.client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "[slow]"}],
            max_tokens=50,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = iter(stream)
        received = [next(chunks), next(chunks)]  # the provider now waits for `release_slow`
        (live,) = caller.books.open_records()
        caller.books.change(live.id, created_at=utcnow() - timedelta(hours=6))
        gateway.server.run(sweep_once(billing_of(gateway)))
        assert caller.books.record(live.id).status == "reserved", "a live stream is never swept"
    finally:
        fake.release_slow.set()
    received += list(chunks)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in received if chunk.choices)
    assert text == "".join(WORDS)
    cost = full_answer_micro(gateway.settings)
    extra = received[-1].model_extra or {}
    assert extra["crosscompute"]["billed_credits"] == cost / 1_000_000, "billed for every token"
    record = caller.books.record(live.id)
    assert (record.status, record.billed_micro, record.output_tokens) == ("settled", cost, COMPLETION_TOKENS)
    assert caller.books.key_used() == cost
    signup = gateway.settings.signup_micro
    assert caller.books.balance_and_ledger() == (signup - cost, signup - cost)


def test_an_abandoned_hold_is_swept_once_its_lease_passes_and_its_credits_come_back(
    gateway: Gateway, caller: Caller
) -> None:
    billing = billing_of(gateway)
    call_id = str(uuid.uuid4())
    # A replica took this hold and died: nobody will settle it.
    gateway.server.run(
        billing.reserve(
            HoldRequest(
                call_id=call_id,
                account_id=caller.books.account_id(),
                key_id=caller.books.key_id,
                amount_micro=2_000_000,
                requested_model=MODEL,
                stream=True,
                routing_profile="explicit",
            )
        )
    )
    assert caller.books.key_used() == 2_000_000
    # Made minutes ago, not hours: only its lease says it is abandoned.
    caller.books.change(call_id, lease_until=utcnow() - timedelta(seconds=1))
    gateway.server.run(sweep_once(billing))
    record = caller.books.record(call_id)
    assert (record.status, record.error_code, record.billed_micro) == ("released", LEASE_EXPIRED, 0)
    assert caller.books.entries(call_id) == {
        f"usage:{call_id}:hold": -2_000_000,
        f"usage:{call_id}:return": 2_000_000,
    }
    assert_untouched(caller, gateway.settings.signup_micro)


def test_a_live_stream_renews_its_lease_as_it_relays(
    database_url: str, supabase: SupabaseStandIn, fake: FakeProvider
) -> None:
    # A one-second lease (and no background sweep) so that the lease can pass while the stream waits.
    settings = fake_settings(
        database_url,
        supabase,
        fake,
        CROSSCOMPUTE_HOLD_LEASE_SECONDS="1",
        CROSSCOMPUTE_HOLD_SWEEP_SECONDS="3600",
    )
    with gateway_with(settings) as gateway, httpx.Client(base_url=gateway.base_url, timeout=30) as http:
        person = sign_in(gateway, supabase, http)
        boot = person.bootstrap()
        books = KeyBooks(settings, boot["key"]["id"])
        fake.release_slow.clear()
        with person.openai(boot["apiKey"]) as client:
            try:
                stream = client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "[slow]"}], max_tokens=50, stream=True
                )
                chunks = iter(stream)
                next(chunks)
                (live,) = books.open_records()
                assert live.lease_until is not None
                first_lease = as_utc(live.lease_until)
                eventually(lambda: utcnow() > first_lease, what="the first lease to pass")
            finally:
                fake.release_slow.set()
            list(chunks)
        record = books.record(live.id)
        assert (record.status, record.billed_micro) == ("settled", full_answer_micro(settings))
        assert record.lease_until is not None and as_utc(record.lease_until) > first_lease, (
            "the relay renewed the lease when the stream went on"
        )
