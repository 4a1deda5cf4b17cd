"""The billing interface on each backend (the ORM on SQLite, one statement per step on PostgreSQL's
pool): holds, refusals, settlements within and beyond the hold, first-close-wins, leases and the
sweeper. Every test ends with the books balanced."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.db.models import Account, ApiKey, LedgerEntry, UsageRecord, as_utc, utcnow
from server.db.pool import open_pool
from server.db.repositories import LedgerRepository
from server.db.repositories.billing_postgres import PostgresBilling
from server.db.repositories.billing_sqlite import SqliteBilling
from server.db.urls import DatabaseUrls
from server.domain.api_keys import KeyKind, make_key
from server.domain.errors import Unauthenticated
from server.domain.holds import (
    LEASE_EXPIRED,
    Billing,
    Held,
    HoldRequest,
    RefusalReason,
    Refused,
    Settlement,
    UsageFacts,
)
from server.domain.sweeper import sweep_once

LEASE = timedelta(minutes=15)
FACTS = UsageFacts(
    model="openai/gpt-5-mini",
    provider="openai",
    price_rule="openai-gpt-5-mini-2026-08",
    input_tokens=20,
    cached_input_tokens=0,
    output_tokens=5,
)


@pytest.fixture
async def billing(
    migrated: DatabaseUrls, sessions: async_sessionmaker[AsyncSession]
) -> AsyncIterator[Billing]:
    """The implementation the server would choose for this backend."""
    if migrated.backend == "sqlite":
        yield SqliteBilling(sessions, LEASE)
        return
    pool = await open_pool(migrated, 4)
    try:
        yield PostgresBilling(pool, LEASE)
    finally:
        await pool.close()


@dataclass
class Books:
    """One account and one key, and what storage says about them."""

    sessions: async_sessionmaker[AsyncSession]
    account_id: str
    key_id: str

    def hold(self, amount_micro: int, key_id: str | None = None) -> HoldRequest:
        return HoldRequest(
            call_id=str(uuid.uuid4()),
            account_id=self.account_id,
            key_id=key_id or self.key_id,
            amount_micro=amount_micro,
            requested_model="openai/gpt-5-mini",
            stream=True,
            routing_profile="explicit",
        )

    async def balance(self) -> int:
        async with self.sessions() as session:
            return int(
                await session.scalar(select(Account.balance_micro).where(Account.id == self.account_id)) or 0
            )

    async def key_used(self) -> int:
        async with self.sessions() as session:
            return int(await session.scalar(select(ApiKey.used_micro).where(ApiKey.id == self.key_id)) or 0)

    async def record(self, call_id: str) -> UsageRecord:
        async with self.sessions() as session:
            record = await session.get(UsageRecord, call_id)
        assert record is not None
        return record

    async def entries(self, call_id: str) -> dict[str, int]:
        """The call's ledger entries: idempotency key → amount."""
        async with self.sessions() as session:
            rows = await session.execute(
                select(LedgerEntry.idempotency_key, LedgerEntry.amount_micro).where(
                    LedgerEntry.reference == f"usage {call_id}"
                )
            )
            return {str(key): int(amount) for key, amount in rows}

    async def backdate(self, call_id: str, **values: Any) -> None:
        async with self.sessions.begin() as session:
            await session.execute(update(UsageRecord).where(UsageRecord.id == call_id).values(**values))

    async def assert_balanced(self, granted: int) -> None:
        """The ledger adds up to the balance, and the key and the account have used exactly what was
        billed plus what is still held."""
        async with self.sessions() as session:
            ledger = sum(
                await session.scalars(
                    select(LedgerEntry.amount_micro).where(LedgerEntry.account_id == self.account_id)
                )
            )
            records = list(
                await session.scalars(select(UsageRecord).where(UsageRecord.account_id == self.account_id))
            )
            account_used = await session.scalar(
                select(Account.used_micro).where(Account.id == self.account_id)
            )
            keys_used = sum(
                await session.scalars(select(ApiKey.used_micro).where(ApiKey.account_id == self.account_id))
            )
        spent = sum(r.reserved_micro if r.status == "reserved" else r.billed_micro for r in records)
        balance = await self.balance()
        assert balance == ledger == granted - spent >= 0
        assert keys_used == account_used == spent

    async def another_key(self, quota: int | None = None) -> str:
        return await add_key(self.sessions, self.account_id, quota)


async def books_with(
    sessions: async_sessionmaker[AsyncSession], granted: int, quota: int | None = None, active: bool = True
) -> Books:
    ledger = LedgerRepository(sessions)
    account_id = await ledger.create_account("person", str(uuid.uuid4()))
    await ledger.apply(account_id, granted, kind="grant", idempotency_key=f"grant:{account_id}")
    return Books(sessions, account_id, await add_key(sessions, account_id, quota, active))


async def add_key(
    sessions: async_sessionmaker[AsyncSession], account_id: str, quota: int | None, active: bool = True
) -> str:
    secret = make_key(KeyKind.LIVE)
    async with sessions.begin() as session:
        key = ApiKey(
            account_id=account_id,
            label="test",
            prefix=secret.prefix,
            secret_hash=secret.digest,
            quota_micro=quota,
            active=active,
        )
        session.add(key)
        await session.flush()
        return key.id


def near(value: datetime | None, expected: datetime, slack: timedelta = timedelta(seconds=30)) -> bool:
    return value is not None and abs(as_utc(value) - expected) <= slack


async def test_a_hold_moves_the_key_and_the_account_and_opens_a_leased_record(
    billing: Billing, sessions: async_sessionmaker[AsyncSession]
) -> None:
    books = await books_with(sessions, 10_000_000)
    hold = books.hold(3_000_000)
    assert await billing.reserve(hold) == Held(3_000_000)
    record = await books.record(hold.call_id)
    assert (record.status, record.reserved_micro, record.billed_micro) == ("reserved", 3_000_000, 0)
    assert near(record.lease_until, utcnow() + LEASE), "leased for the configured length from now"
    assert await books.entries(hold.call_id) == {f"usage:{hold.call_id}:hold": -3_000_000}
    assert (await books.balance(), await books.key_used()) == (7_000_000, 3_000_000)
    await books.assert_balanced(10_000_000)


@pytest.mark.parametrize(
    ("quota", "granted", "reason"),
    [(2_000_000, 10_000_000, RefusalReason.QUOTA), (None, 2_000_000, RefusalReason.BALANCE)],
    ids=["quota", "balance"],
)
async def test_a_hold_that_does_not_fit_is_refused_with_its_reason_and_changes_nothing(
    billing: Billing,
    sessions: async_sessionmaker[AsyncSession],
    quota: int | None,
    granted: int,
    reason: RefusalReason,
) -> None:
    books = await books_with(sessions, granted, quota)
    hold = books.hold(3_000_000)
    outcome = await billing.reserve(hold)
    assert outcome == Refused(reason)
    assert isinstance(outcome, Refused)
    assert outcome.error().reason == "INSUFFICIENT_CREDITS"
    assert (
        outcome.message
        == {
            RefusalReason.QUOTA: "This key's credit quota does not cover this request.",
            RefusalReason.BALANCE: "Not enough credits for this request: top up or ask for fewer tokens.",
        }[reason]
    )
    async with sessions() as session:
        assert await session.get(UsageRecord, hold.call_id) is None
    assert await books.entries(hold.call_id) == {}
    assert (await books.balance(), await books.key_used()) == (granted, 0)


async def test_a_deactivated_key_cannot_hold(
    billing: Billing, sessions: async_sessionmaker[AsyncSession]
) -> None:
    books = await books_with(sessions, 10_000_000, active=False)
    with pytest.raises(Unauthenticated):
        await billing.reserve(books.hold(1_000))
    assert await books.balance() == 10_000_000


async def test_a_cost_within_the_hold_is_billed_and_the_rest_given_back(
    billing: Billing, sessions: async_sessionmaker[AsyncSession]
) -> None:
    books = await books_with(sessions, 10_000_000)
    hold = books.hold(3_000_000)
    await billing.reserve(hold)
    settled = await billing.settle(hold.call_id, 1_250_000, FACTS)
    assert settled == Settlement(billed_micro=1_250_000, unbilled_micro=0, closed_now=True)
    record = await books.record(hold.call_id)
    assert (record.status, record.billed_micro, record.unbilled_micro) == ("settled", 1_250_000, 0)
    assert (record.model, record.input_tokens, record.output_tokens) == ("openai/gpt-5-mini", 20, 5)
    assert await books.entries(hold.call_id) == {
        f"usage:{hold.call_id}:hold": -3_000_000,
        f"usage:{hold.call_id}:return": 1_750_000,
    }
    await books.assert_balanced(10_000_000)


async def test_the_first_close_wins_and_later_ones_answer_its_numbers(
    billing: Billing, sessions: async_sessionmaker[AsyncSession]
) -> None:
    books = await books_with(sessions, 10_000_000)
    settled_first, released_first = books.hold(3_000_000), books.hold(3_000_000)
    for hold in (settled_first, released_first):
        await billing.reserve(hold)
    await billing.settle(settled_first.call_id, 1_000_000, FACTS)
    await billing.release(settled_first.call_id, "failed")
    await billing.release(released_first.call_id, "failed")
    again = await billing.settle(released_first.call_id, 1_000_000, FACTS)
    assert again == Settlement(billed_micro=0, unbilled_micro=0, closed_now=False)
    assert (await books.record(settled_first.call_id)).status == "settled"
    assert (await books.record(released_first.call_id)).status == "failed"
    # Racing closes of one call: exactly one of them closes it.
    racing = books.hold(3_000_000)
    await billing.reserve(racing)
    results = await asyncio.gather(
        *(billing.settle(racing.call_id, 2_000_000, FACTS) for _ in range(5)),
        billing.release(racing.call_id, "failed"),
    )
    closes = [result for result in results if isinstance(result, Settlement) and result.closed_now]
    record = await books.record(racing.call_id)
    assert len(closes) == (1 if record.status == "settled" else 0)
    await books.assert_balanced(10_000_000)


async def test_a_cost_beyond_the_hold_is_billed_in_full_when_the_key_and_account_can_pay(
    billing: Billing, sessions: async_sessionmaker[AsyncSession]
) -> None:
    books = await books_with(sessions, 10_000_000, quota=8_000_000)
    hold = books.hold(1_000_000)
    await billing.reserve(hold)
    settled = await billing.settle(hold.call_id, 2_500_000, FACTS)
    assert settled == Settlement(billed_micro=2_500_000, unbilled_micro=0, closed_now=True)
    record = await books.record(hold.call_id)
    assert (record.status, record.billed_micro, record.unbilled_micro) == ("settled", 2_500_000, 0)
    assert await books.entries(hold.call_id) == {
        f"usage:{hold.call_id}:hold": -1_000_000,
        f"usage:{hold.call_id}:overage": -1_500_000,
    }
    await books.assert_balanced(10_000_000)


@pytest.mark.parametrize(
    ("quota", "granted", "billable"),
    [(3_000_000, 10_000_000, 3_000_000), (None, 2_000_000, 2_000_000)],
    ids=["quota-limits", "balance-limits"],
)
async def test_a_cost_beyond_what_can_be_paid_bills_what_can_and_counts_the_rest(
    billing: Billing,
    sessions: async_sessionmaker[AsyncSession],
    quota: int | None,
    granted: int,
    billable: int,
) -> None:
    books = await books_with(sessions, granted, quota)
    hold = books.hold(1_000_000)
    await billing.reserve(hold)
    settled = await billing.settle(hold.call_id, 7_000_000, FACTS)
    assert settled == Settlement(billed_micro=billable, unbilled_micro=7_000_000 - billable, closed_now=True)
    record = await books.record(hold.call_id)
    assert (record.billed_micro, record.unbilled_micro) == (billable, 7_000_000 - billable)
    if quota is not None:
        assert await books.key_used() == quota, "the key is used up to its quota, never beyond"
    else:
        assert await books.balance() == 0, "the balance is spent down to zero, never below"
    # Settling again changes nothing and reports the first close's numbers.
    assert await billing.settle(hold.call_id, 7_000_000, FACTS) == Settlement(
        billed_micro=billable, unbilled_micro=7_000_000 - billable, closed_now=False
    )
    await books.assert_balanced(granted)


async def test_concurrent_costs_beyond_their_holds_never_overdraw(
    billing: Billing, sessions: async_sessionmaker[AsyncSession]
) -> None:
    books = await books_with(sessions, 5_000_000)
    # Several keys of one account: only the account's lock keeps their bills from overdrawing it.
    keys = [books.key_id, await books.another_key(), await books.another_key()]
    holds = [books.hold(500_000, keys[n % 3]) for n in range(6)]
    for hold in holds:
        assert isinstance(await billing.reserve(hold), Held)
    results = await asyncio.gather(*(billing.settle(hold.call_id, 2_000_000, FACTS) for hold in holds))
    assert sum(result.billed_micro for result in results) == 5_000_000, "all the balance, no more"
    assert sum(result.unbilled_micro for result in results) == 12_000_000 - 5_000_000
    assert await books.balance() == 0
    await books.assert_balanced(5_000_000)


async def test_renewing_extends_an_open_lease_and_not_a_closed_one(
    billing: Billing, sessions: async_sessionmaker[AsyncSession]
) -> None:
    books = await books_with(sessions, 10_000_000)
    hold = books.hold(1_000_000)
    await billing.reserve(hold)
    await books.backdate(hold.call_id, lease_until=utcnow() - timedelta(minutes=1))
    assert await billing.renew(hold.call_id) is True
    assert near((await books.record(hold.call_id)).lease_until, utcnow() + LEASE)
    await billing.settle(hold.call_id, 10, FACTS)
    assert await billing.renew(hold.call_id) is False


async def test_the_sweeper_releases_expired_leases_only_and_gives_their_credits_back(
    billing: Billing, sessions: async_sessionmaker[AsyncSession]
) -> None:
    books = await books_with(sessions, 10_000_000)
    live, abandoned = books.hold(2_000_000), books.hold(3_000_000)
    for hold in (live, abandoned):
        await billing.reserve(hold)
    hours_ago = utcnow() - timedelta(hours=5)
    # Both were made hours ago; only the abandoned one's lease has passed.
    await books.backdate(live.call_id, created_at=hours_ago)
    await books.backdate(abandoned.call_id, created_at=hours_ago, lease_until=hours_ago + LEASE)
    assert await sweep_once(billing) >= 1
    swept = await books.record(abandoned.call_id)
    assert (swept.status, swept.error_code, swept.billed_micro) == ("released", LEASE_EXPIRED, 0)
    assert await books.entries(abandoned.call_id) == {
        f"usage:{abandoned.call_id}:hold": -3_000_000,
        f"usage:{abandoned.call_id}:return": 3_000_000,
    }
    assert (await books.record(live.call_id)).status == "reserved", "a live lease is never swept"
    assert (await books.balance(), await books.key_used()) == (8_000_000, 2_000_000)
    # The live call, once it ends, is billed in full.
    assert (await billing.settle(live.call_id, 2_000_000, FACTS)).billed_micro == 2_000_000
    await books.assert_balanced(10_000_000)


async def test_two_sweepers_at_once_release_each_hold_once(
    billing: Billing, sessions: async_sessionmaker[AsyncSession]
) -> None:
    books = await books_with(sessions, 10_000_000)
    holds = [books.hold(100_000) for _ in range(8)]
    for hold in holds:
        await billing.reserve(hold)
        await books.backdate(hold.call_id, lease_until=utcnow() - timedelta(seconds=1))
    first, second = await asyncio.gather(sweep_once(billing), sweep_once(billing))
    assert first + second >= len(holds)
    for hold in holds:
        assert await books.entries(hold.call_id) == {
            f"usage:{hold.call_id}:hold": -100_000,
            f"usage:{hold.call_id}:return": 100_000,
        }
    await books.assert_balanced(10_000_000)


async def test_the_sweepers_index_holds_open_holds_only(
    migrated: DatabaseUrls, sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with sessions() as session:
        if migrated.backend == "sqlite":
            definition = await session.scalar(
                text("SELECT sql FROM sqlite_master WHERE name = 'ix_usage_records_open_lease_until'")
            )
        else:
            definition = await session.scalar(
                text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_usage_records_open_lease_until'")
            )
    assert definition is not None and "lease_until" in definition
    assert "WHERE" in definition.upper() and "reserved" in definition, "a partial index, on open holds"
