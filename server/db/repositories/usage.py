"""Usage records read back: what a key may spend now, and an account's billed usage per model and per
day. (Holding and billing a call's credits is `server.domain.holds.Billing`'s job.)"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.db.models import Account, ApiKey, UsageRecord, as_utc


@dataclass(frozen=True)
class Spendable:
    """What a key may spend now: the smaller of its quota left and its account's balance."""

    micro: int


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
    """Reads of usage records and spending room."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

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
