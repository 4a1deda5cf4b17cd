"""What a gateway's database says about one key's money: its usage records, the key's used credits,
the account's balance and ledger, read (and, to stage a fault, changed) through the models."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, create_engine, func, select, update

from server.db.models import Account, ApiKey, LedgerEntry, UsageRecord
from server.db.urls import resolve
from server.settings import DEFAULT_SQLITE_PATH, Settings


@contextmanager
def _engine(settings: Settings) -> Iterator[Engine]:
    engine = create_engine(resolve(settings.database_url, DEFAULT_SQLITE_PATH).render_sync())
    try:
        yield engine
    finally:
        engine.dispose()


@dataclass(frozen=True)
class KeyBooks:
    """One key of one account in a gateway's database."""

    settings: Settings
    key_id: str

    def records(self) -> list[UsageRecord]:
        """The key's usage records, oldest first (detached copies)."""
        with _engine(self.settings) as engine, engine.connect() as connection:
            rows = connection.execute(
                select(UsageRecord).where(UsageRecord.key_id == self.key_id).order_by(UsageRecord.created_at)
            ).all()
        return [UsageRecord(**dict(row._mapping)) for row in rows]

    def record(self, call_id: str) -> UsageRecord:
        return next(record for record in self.records() if record.id == call_id)

    def open_records(self) -> list[UsageRecord]:
        return [record for record in self.records() if record.status == "reserved"]

    def key_used(self) -> int:
        with _engine(self.settings) as engine, engine.connect() as connection:
            return int(connection.scalar(select(ApiKey.used_micro).where(ApiKey.id == self.key_id)) or 0)

    def account_id(self) -> str:
        with _engine(self.settings) as engine, engine.connect() as connection:
            return str(connection.scalar(select(ApiKey.account_id).where(ApiKey.id == self.key_id)))

    def balance_and_ledger(self) -> tuple[int, int]:
        """The account's balance and the sum of its ledger entries (equal when the books are right)."""
        account_id = self.account_id()
        with _engine(self.settings) as engine, engine.connect() as connection:
            balance = connection.scalar(select(Account.balance_micro).where(Account.id == account_id))
            ledger = connection.scalar(
                select(func.coalesce(func.sum(LedgerEntry.amount_micro), 0)).where(
                    LedgerEntry.account_id == account_id
                )
            )
        return int(balance or 0), int(ledger or 0)

    def entries(self, call_id: str) -> dict[str, int]:
        """A call's ledger entries: idempotency key → amount."""
        with _engine(self.settings) as engine, engine.connect() as connection:
            rows = connection.execute(
                select(LedgerEntry.idempotency_key, LedgerEntry.amount_micro).where(
                    LedgerEntry.reference == f"usage {call_id}"
                )
            ).all()
        return {str(key): int(amount) for key, amount in rows}

    def change(self, call_id: str, **values: Any) -> None:
        """Change a usage record behind the gateway's back (to stage time having passed)."""
        with _engine(self.settings) as engine, engine.begin() as connection:
            connection.execute(update(UsageRecord).where(UsageRecord.id == call_id).values(**values))
