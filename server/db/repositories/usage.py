"""Reservations and usage records: hold the worst case before a call, settle the real cost after,
exactly once per request. Every balance change has its ledger entry in the same transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.db.models import Account, ApiKey, LedgerEntry, UsageRecord, as_utc, utcnow
from server.db.repositories.billing_postgres import PostgresBilling
from server.db.repositories.ledger import LedgerRepository
from server.domain.errors import PaymentRequired, Unauthenticated


@dataclass(frozen=True)
class Spendable:
    """What a key may spend now: the smaller of its quota left and its account's balance."""

    micro: int


@dataclass(frozen=True)
class UsageFacts:
    """What a settled call consumed and where it went."""

    model: str
    provider: str
    price_rule: str
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    routing_tier: str | None = None
    routing_budget: str | None = None
    routing_intelligence: str | None = None


@dataclass(frozen=True)
class ModelUsageRow:
    """An account's billed usage of one model."""

    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    request_count: int
    last_request_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class DailyBucketRow:
    """An account's billed usage on one UTC day, for one key and one model."""

    day: str
    key_id: str
    key_label: str
    key_prefix: str
    key_active: bool
    provider: str
    model: str
    billed_micro: int
    request_count: int
    input_tokens: int
    output_tokens: int


def _utc_day(dialect: str) -> ColumnElement[str]:
    """A usage record's UTC day as `YYYY-MM-DD` text, on either backend."""
    if dialect == "sqlite":  # stored as UTC text; date() reads it (and any offset) as UTC
        return func.date(UsageRecord.created_at)
    return func.to_char(func.timezone("UTC", UsageRecord.created_at), "YYYY-MM-DD")


class UsageRepository:
    """The money side of inference."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], fast_billing: PostgresBilling | None = None
    ) -> None:
        self._sessions = sessions
        #: On PostgreSQL, holds and settlements take one statement each instead of an ORM transaction.
        self._fast = fast_billing

    async def spendable(self, key_id: str) -> Spendable:
        """What the key may spend right now (a read; the reservation re-checks atomically)."""
        async with self._sessions() as session:
            row = (
                await session.execute(
                    select(ApiKey.quota_micro, ApiKey.used_micro, Account.balance_micro)
                    .join(Account, Account.id == ApiKey.account_id)
                    .where(ApiKey.id == key_id)
                )
            ).first()
        if row is None:
            return Spendable(0)
        quota, used, balance = row
        return Spendable(balance if quota is None else max(0, min(balance, quota - used)))

    async def reserve(
        self,
        *,
        call_id: str,
        account_id: str,
        key_id: str,
        amount_micro: int,
        requested_model: str,
        stream: bool,
        routing_profile: str,
    ) -> None:
        """Hold `amount_micro` against the key's quota and the account's balance, atomically, and open
        the call's usage record. Raises PaymentRequired when either would be exceeded."""
        if self._fast is not None:
            await self._fast.reserve(
                call_id=call_id,
                account_id=account_id,
                key_id=key_id,
                amount_micro=amount_micro,
                requested_model=requested_model,
                stream=stream,
                routing_profile=routing_profile,
            )
            return
        async with self._sessions.begin() as session:
            held = await session.execute(
                update(ApiKey)
                .where(
                    ApiKey.id == key_id,
                    ApiKey.active,
                    ApiKey.quota_micro.is_(None) | (ApiKey.used_micro + amount_micro <= ApiKey.quota_micro),
                )
                .values(used_micro=ApiKey.used_micro + amount_micro)
                .returning(ApiKey.id)
            )
            if held.first() is None:
                active = await session.scalar(select(ApiKey.active).where(ApiKey.id == key_id))
                if not active:
                    raise Unauthenticated("This API key has been deactivated.", reason="API_KEY_DEACTIVATED")
                raise PaymentRequired(
                    "This key's credit quota does not cover this request.", reason="INSUFFICIENT_CREDITS"
                )
            balance = await LedgerRepository.move(session, account_id, -amount_micro, "debit")
            session.add(
                LedgerEntry(
                    account_id=account_id,
                    key_id=key_id,
                    kind="debit",
                    amount_micro=-amount_micro,
                    balance_after_micro=balance,
                    idempotency_key=f"usage:{call_id}:hold",
                    reference=f"usage {call_id}",
                )
            )
            session.add(
                UsageRecord(
                    id=call_id,
                    request_id=call_id,
                    account_id=account_id,
                    key_id=key_id,
                    status="reserved",
                    requested_model=requested_model,
                    stream=stream,
                    reserved_micro=amount_micro,
                    routing_profile=routing_profile,
                )
            )

    async def settle(self, call_id: str, billed_micro: int, facts: UsageFacts) -> int:
        """Close the call at `billed_micro` (at most what was held) and give back the rest. Only
        the first settle or release of a call does anything; it returns what the call was billed."""
        return await self._close(call_id, "settled", billed_micro, facts, None)

    async def release(self, call_id: str, error_code: str, facts: UsageFacts | None = None) -> None:
        """Close a failed call: nothing billed, everything given back."""
        await self._close(call_id, "failed", 0, facts, error_code)

    async def by_model(self, account_id: str) -> list[ModelUsageRow]:
        """The account's settled usage per model, most recently used first."""
        last = func.max(UsageRecord.created_at)
        statement = (
            select(
                UsageRecord.provider,
                UsageRecord.model,
                func.sum(UsageRecord.input_tokens),
                func.sum(UsageRecord.output_tokens),
                func.count(),
                last,
                func.max(UsageRecord.settled_at),
            )
            .where(UsageRecord.account_id == account_id, UsageRecord.status == "settled")
            .group_by(UsageRecord.provider, UsageRecord.model)
            .order_by(last.desc())
        )
        async with self._sessions() as session:
            rows = (await session.execute(statement)).all()
        return [
            ModelUsageRow(
                provider=row[0] or "",
                model=row[1] or "",
                input_tokens=int(row[2] or 0),
                output_tokens=int(row[3] or 0),
                request_count=int(row[4]),
                last_request_at=as_utc(row[5]),
                updated_at=as_utc(row[6] or row[5]),
            )
            for row in rows
        ]

    async def daily_buckets(self, account_id: str, since: datetime) -> list[DailyBucketRow]:
        """The account's settled usage since `since`, added up per UTC day, key and model."""
        async with self._sessions() as session:
            day = _utc_day(session.get_bind().dialect.name).label("day")
            grouping = (day, UsageRecord.key_id, ApiKey.label, ApiKey.prefix, ApiKey.active)
            statement = (
                select(
                    *grouping,
                    UsageRecord.provider,
                    UsageRecord.model,
                    func.sum(UsageRecord.billed_micro),
                    func.count(),
                    func.sum(UsageRecord.input_tokens),
                    func.sum(UsageRecord.output_tokens),
                )
                .outerjoin(ApiKey, ApiKey.id == UsageRecord.key_id)
                .where(
                    UsageRecord.account_id == account_id,
                    UsageRecord.status == "settled",
                    UsageRecord.created_at >= since,
                )
                .group_by(*grouping, UsageRecord.provider, UsageRecord.model)
                .order_by(day)
            )
            rows = (await session.execute(statement)).all()
        return [
            DailyBucketRow(
                day=str(row[0]),
                key_id=row[1] or "",
                key_label=row[2] or "",
                key_prefix=row[3] or "",
                key_active=bool(row[4]),
                provider=row[5] or "",
                model=row[6] or "",
                billed_micro=int(row[7] or 0),
                request_count=int(row[8]),
                input_tokens=int(row[9] or 0),
                output_tokens=int(row[10] or 0),
            )
            for row in rows
        ]

    async def release_stale(self, older_than: timedelta) -> int:
        """Release reservations a crashed replica left open; return how many."""
        cutoff: datetime = utcnow() - older_than
        async with self._sessions() as session:
            stale = list(
                await session.scalars(
                    select(UsageRecord.id).where(
                        UsageRecord.status == "reserved", UsageRecord.created_at < cutoff
                    )
                )
            )
        for call_id in stale:
            await self.release(call_id, "abandoned")
        return len(stale)

    async def _close(
        self, call_id: str, status: str, billed_micro: int, facts: UsageFacts | None, error_code: str | None
    ) -> int:
        if self._fast is not None:
            return await self._fast.close(call_id, status, billed_micro, facts, error_code)
        async with self._sessions.begin() as session:
            values: dict[str, object] = {"status": status, "settled_at": utcnow(), "error_code": error_code}
            if facts is not None:
                values.update(
                    model=facts.model,
                    provider=facts.provider,
                    price_rule=facts.price_rule,
                    input_tokens=facts.input_tokens,
                    cached_input_tokens=facts.cached_input_tokens,
                    output_tokens=facts.output_tokens,
                    routing_tier=facts.routing_tier,
                    routing_budget=facts.routing_budget,
                    routing_intelligence=facts.routing_intelligence,
                )
            closed = (
                await session.execute(
                    update(UsageRecord)
                    .where(UsageRecord.id == call_id, UsageRecord.status == "reserved")
                    .values(
                        billed_micro=func.min(UsageRecord.reserved_micro, billed_micro)
                        if session.get_bind().dialect.name == "sqlite"
                        else func.least(UsageRecord.reserved_micro, billed_micro),
                        **values,
                    )
                    .returning(
                        UsageRecord.reserved_micro,
                        UsageRecord.billed_micro,
                        UsageRecord.account_id,
                        UsageRecord.key_id,
                    )
                )
            ).first()
            if closed is None:
                billed = await session.scalar(
                    select(UsageRecord.billed_micro).where(UsageRecord.id == call_id)
                )
                return int(billed or 0)
            reserved, billed, account_id, key_id = closed
            refund = reserved - billed
            if refund > 0:
                # Rows are locked in the order reserve() locks them (key, then account): no deadlock.
                if key_id is not None:
                    await session.execute(
                        update(ApiKey)
                        .where(ApiKey.id == key_id)
                        .values(used_micro=ApiKey.used_micro - refund)
                    )
                balance = await LedgerRepository.move(session, account_id, refund, "refund")
                session.add(
                    LedgerEntry(
                        account_id=account_id,
                        key_id=key_id,
                        kind="refund",
                        amount_micro=refund,
                        balance_after_micro=balance,
                        idempotency_key=f"usage:{call_id}:return",
                        reference=f"usage {call_id}",
                    )
                )
            return int(billed)
