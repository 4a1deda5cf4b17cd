"""A hold's life in the chat service, with stand-ins for storage and the provider (no Envoy, no
database): the lease's renewal schedule, and a caller that leaves while its hold is being taken."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any, cast

import pytest

from server.domain.catalog import DEFAULT_CATALOG, Catalog, configured_providers, load_catalog_file
from server.domain.chat.lease import RETRY_SECONDS, LeaseRenewal, shortest_safe_lease
from server.domain.chat.service import ChatService
from server.domain.holds import ABANDONED, Held, HoldRequest, Refused, ReleaseStatus, Settlement, UsageFacts
from server.domain.key_auth import KeyPrincipal
from server.domain.routing.router import Route, Router


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_a_lease_is_renewed_once_more_than_half_of_it_has_passed() -> None:
    clock = Clock()
    renewal = LeaseRenewal(900, clock)
    clock.now += 449.9
    assert not renewal.due(), "chunks before half the lease ask nothing of the database"
    clock.now += 0.1
    assert renewal.due()
    renewal.renewing()
    clock.now += 449.9
    assert not renewal.due(), "a renewal starts the half again"
    clock.now += 0.1
    assert renewal.due()


def test_a_failed_renewal_is_tried_again_soon_not_at_every_chunk() -> None:
    clock = Clock()
    renewal = LeaseRenewal(900, clock)
    clock.now += 450
    renewal.renewing()
    renewal.failed()
    assert not renewal.due()
    clock.now += RETRY_SECONDS
    assert renewal.due()


def test_the_shortest_safe_lease_covers_every_attempt_or_the_longest_silence_twice() -> None:
    # The defaults: 120 s upstream timeout, 3 attempts, Envoy's 300 s stream idle timeout.
    assert shortest_safe_lease(120, 3, 300) == 2 * 360 + 60 <= 900
    assert shortest_safe_lease(20, 3, 300) == 2 * 300 + 60, "a client not reading can be silent longest"


class SlowHold:
    """Storage whose hold commits whatever its caller does (as a database statement would), once
    `proceed` is set; it records what is released."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.proceed = asyncio.Event()
        self.released: list[tuple[str, str, ReleaseStatus]] = []
        self.release_seen = asyncio.Event()
        self.held: list[str] = []

    async def reserve(self, hold: HoldRequest) -> Held | Refused:
        self.entered.set()
        return await asyncio.shield(self._commit(hold))

    async def _commit(self, hold: HoldRequest) -> Held | Refused:
        await self.proceed.wait()
        self.held.append(hold.call_id)
        return Held(hold.amount_micro)

    async def settle(self, call_id: str, cost_micro: int, facts: UsageFacts) -> Settlement:
        raise AssertionError("nothing is settled: no provider was called")

    async def release(
        self,
        call_id: str,
        error_code: str,
        *,
        status: ReleaseStatus = "failed",
        facts: UsageFacts | None = None,
    ) -> None:
        self.released.append((call_id, error_code, status))
        self.release_seen.set()

    async def renew(self, call_id: str) -> bool:
        return True

    async def release_abandoned(self, limit: int = 500) -> int:
        return 0


class OneRoute:
    def __init__(self, catalog: Catalog) -> None:
        entry = catalog.get("openai/gpt-5-mini")
        assert entry is not None and entry.spec is not None
        self._spec = entry.spec

    async def route(self, request: Any, prompt_tokens: int) -> Route:
        return Route(profile="explicit", candidates=[self._spec])


async def test_a_caller_that_leaves_while_its_hold_is_taken_gets_it_given_back() -> None:
    file = load_catalog_file(DEFAULT_CATALOG)
    catalog = Catalog(file, configured_providers(file, {"OPENAI_API_KEY": "sk-unused"}, "off"))
    storage = SlowHold()
    service = ChatService(
        catalog,
        {},
        storage,
        cast(Any, None),
        Decimal(1000),
        16_384,
        cast(Router, OneRoute(catalog)),
        cast(Any, None),
        900,
    )
    principal = KeyPrincipal(key_id="key", account_id="account", kind=cast(Any, "live"), prefix="cc_live_x")
    body = b'{"model": "openai/gpt-5-mini", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5}'
    async with asyncio.timeout(10):  # a deadline against hanging, not a timing assertion
        call = asyncio.create_task(service.start(principal, body))
        entered = asyncio.create_task(storage.entered.wait())
        await asyncio.wait({call, entered}, return_when=asyncio.FIRST_COMPLETED)
        assert not call.done(), "the call is taking its hold"
        call.cancel()  # the client disconnects while the hold's statement is in flight
        await asyncio.sleep(0)  # one turn of the loop: the cancellation lands
        assert storage.released == [], "nothing to give back before the hold exists"
        storage.proceed.set()  # the statement commits after all
        with pytest.raises(asyncio.CancelledError):
            await call
        await storage.release_seen.wait()
    (call_id,) = storage.held
    assert storage.released == [(call_id, ABANDONED, "released")], "the hold it took was given back"
