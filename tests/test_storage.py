"""Storage on SQLite and PostgreSQL: migrations, constraints, and a ledger that never double-applies
nor goes negative, whatever the concurrency."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.db.migrate import upgrade
from server.db.models import Account, ApiKey, Base, UsageRecord, X402Payment
from server.db.repositories import DatabaseProbe, LedgerRepository
from server.db.urls import DatabaseUrls
from server.domain.errors import NotFound, PaymentRequired


@pytest.fixture
def ledger(sessions: async_sessionmaker[AsyncSession]) -> LedgerRepository:
    return LedgerRepository(sessions)


def test_migrations_match_the_models_exactly(migrated: DatabaseUrls) -> None:
    upgrade(migrated)  # a second run changes nothing
    engine = create_engine(migrated.render_sync())
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
            tables = set(inspect(connection).get_table_names())
            version = connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    finally:
        engine.dispose()
    assert set(Base.metadata.tables) <= tables
    assert {"accounts", "profiles", "api_keys", "ledger_entries", "usage_records", "x402_payments"} <= tables
    assert version == "0006"


async def test_probe_answers(sessions: async_sessionmaker[AsyncSession]) -> None:
    assert await DatabaseProbe(sessions).ping() >= 0


async def test_a_grant_applies_once_per_idempotency_key(ledger: LedgerRepository) -> None:
    account = await ledger.create_account("person", str(uuid.uuid4()))
    key = f"signup:{account}"
    first = await ledger.apply(account, 5_000_000, kind="grant", idempotency_key=key)
    again = await ledger.apply(account, 5_000_000, kind="grant", idempotency_key=key)
    assert first.applied is True and first.balance_micro == 5_000_000
    assert again.applied is False and again.entry_id == first.entry_id and again.balance_micro == 5_000_000
    assert await ledger.balance(account) == await ledger.ledger_sum(account) == 5_000_000


async def test_racing_copies_of_one_grant_apply_once(ledger: LedgerRepository) -> None:
    account = await ledger.create_account("agent", f"agent-{uuid.uuid4().hex}")
    results = await asyncio.gather(
        *(
            ledger.apply(account, 1_000_000, kind="purchase", idempotency_key=f"tx:{account}")
            for _ in range(10)
        )
    )
    assert sum(result.applied for result in results) == 1
    assert len({result.entry_id for result in results}) == 1
    assert await ledger.balance(account) == await ledger.ledger_sum(account) == 1_000_000


async def test_concurrent_debits_never_take_the_balance_below_zero(ledger: LedgerRepository) -> None:
    account = await ledger.create_account("person", str(uuid.uuid4()))
    await ledger.apply(account, 100, kind="grant", idempotency_key=f"grant:{account}")

    async def debit(n: int) -> str:
        try:
            await ledger.apply(account, -10, kind="debit", idempotency_key=f"debit:{account}:{n}")
        except PaymentRequired as refused:
            return refused.reason
        return "DEBITED"

    outcomes = await asyncio.gather(*(debit(n) for n in range(25)))
    assert outcomes.count("DEBITED") == 10
    assert outcomes.count("INSUFFICIENT_CREDITS") == 15
    assert await ledger.balance(account) == await ledger.ledger_sum(account) == 0


async def test_a_refused_debit_changes_nothing(ledger: LedgerRepository) -> None:
    account = await ledger.create_account("person", str(uuid.uuid4()))
    await ledger.apply(account, 7, kind="grant", idempotency_key=f"grant:{account}")
    with pytest.raises(PaymentRequired):
        await ledger.apply(account, -8, kind="debit", idempotency_key=f"debit:{account}")
    assert await ledger.balance(account) == await ledger.ledger_sum(account) == 7
    with pytest.raises(NotFound):
        await ledger.apply(str(uuid.uuid4()), 1, kind="grant", idempotency_key=f"ghost:{account}")


async def test_the_database_itself_refuses_a_negative_balance(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions.begin() as session:
        account = Account(kind="person", external_id=str(uuid.uuid4()))
        session.add(account)
    with pytest.raises(IntegrityError):
        async with sessions.begin() as session:
            await session.execute(
                text("UPDATE accounts SET balance_micro = -1 WHERE id = :id"), {"id": account.id}
            )


async def test_one_usage_record_per_request_and_unique_key_hashes(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions.begin() as session:
        account = Account(kind="person", external_id=str(uuid.uuid4()))
        session.add(account)
        await session.flush()
        digest = uuid.uuid4().hex
        session.add(ApiKey(account_id=account.id, label="Default", prefix="cc_live_abc", secret_hash=digest))
        session.add(UsageRecord(request_id=f"req-{digest}", account_id=account.id, requested_model="auto"))
    with pytest.raises(IntegrityError):
        async with sessions.begin() as session:
            session.add(
                UsageRecord(request_id=f"req-{digest}", account_id=account.id, requested_model="auto")
            )
    with pytest.raises(IntegrityError):
        async with sessions.begin() as session:
            session.add(ApiKey(account_id=account.id, label="Copy", prefix="cc_live_abc", secret_hash=digest))


async def test_an_x402_authorisation_is_recorded_once(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Once per (chain id, asset, payer, nonce): the same authorisation re-wrapped as x402 v1, which
    names the network `base-sepolia` instead of `eip155:84532`, is still the same payment."""
    async with sessions.begin() as session:
        account = Account(kind="agent", external_id=f"agent-{uuid.uuid4().hex}")
        session.add(account)
    nonce = "0x" + uuid.uuid4().hex * 2

    def payment(version: int, network: str) -> X402Payment:
        return X402Payment(
            account_id=account.id,
            x402_version=version,
            network=network,
            chain_id=84532,
            asset="0x036cbd53842c5426634e7929541ec2318f3dcf7e",
            payer="0x2222222222222222222222222222222222222222",
            pay_to="0x1111111111111111111111111111111111111111",
            nonce=nonce,
            valid_before=2**31,
            amount_atomic=5_000_000,
            amount_usd_micro=5_000_000,
            credits_micro=5_000_000_000,
        )

    async with sessions.begin() as session:
        session.add(payment(2, "eip155:84532"))
    for version, network in ((2, "eip155:84532"), (1, "base-sepolia")):
        with pytest.raises(IntegrityError):
            async with sessions.begin() as session:
                session.add(payment(version, network))
