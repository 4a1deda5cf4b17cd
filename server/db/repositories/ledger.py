"""The credit ledger: every change of a balance, once per idempotency key, never below zero."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.db.models import Account, LedgerEntry
from server.domain.errors import NotFound, PaymentRequired

#: Ledger kinds, and which account total each one moves besides the balance.
_LEDGER_TOTALS = {
    "grant": Account.granted_micro,
    "revoke": Account.granted_micro,
    "purchase": Account.purchased_micro,
    "debit": Account.used_micro,
    "refund": Account.used_micro,
}


@dataclass(frozen=True)
class LedgerResult:
    """The outcome of applying a ledger entry."""

    entry_id: str
    #: False when the idempotency key had been used already (nothing changed).
    applied: bool
    balance_micro: int


class LedgerRepository:
    """Credit movements. The balance and its ledger entry change in one transaction, and a
    conditional UPDATE keeps the balance from going below zero whatever the concurrency."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def create_account(self, kind: str, external_id: str, display_name: str | None = None) -> str:
        """Create an account with a zero balance; return its id."""
        async with self._sessions.begin() as session:
            account = Account(kind=kind, external_id=external_id, display_name=display_name)
            session.add(account)
        return account.id

    async def apply(
        self,
        account_id: str,
        amount_micro: int,
        *,
        kind: str,
        idempotency_key: str,
        reference: str | None = None,
        key_id: str | None = None,
    ) -> LedgerResult:
        """Add `amount_micro` (negative to take away) once per `idempotency_key`.

        Raises `PaymentRequired` when the balance would go below zero, `NotFound` for an unknown account.
        """
        try:
            async with self._sessions.begin() as session:
                balance = await self.move(session, account_id, amount_micro, kind)
                entry = LedgerEntry(
                    account_id=account_id,
                    key_id=key_id,
                    kind=kind,
                    amount_micro=amount_micro,
                    balance_after_micro=balance,
                    idempotency_key=idempotency_key,
                    reference=reference,
                )
                session.add(entry)
                await session.flush()
            return LedgerResult(entry_id=entry.id, applied=True, balance_micro=balance)
        except IntegrityError:
            existing = await self._find(idempotency_key)
            if existing is None:
                raise
            return existing

    async def balance(self, account_id: str) -> int:
        """The account's balance in micro-credits."""
        async with self._sessions() as session:
            value = await session.scalar(select(Account.balance_micro).where(Account.id == account_id))
        if value is None:
            raise NotFound("no such account")
        return value

    async def ledger_sum(self, account_id: str) -> int:
        """The sum of the account's ledger entries (equals the balance when the books are right)."""
        async with self._sessions() as session:
            rows = await session.scalars(
                select(LedgerEntry.amount_micro).where(LedgerEntry.account_id == account_id)
            )
            return sum(rows)

    @staticmethod
    async def move(session: AsyncSession, account_id: str, amount_micro: int, kind: str) -> int:
        """Inside `session`'s transaction: change the balance (and its total); return the new balance."""
        total = _LEDGER_TOTALS[kind]
        # Debits and revocations are negative amounts; the totals count them as positive usage.
        total_change = -amount_micro if kind in {"debit", "refund"} else amount_micro
        statement = (
            update(Account)
            .where(Account.id == account_id, Account.balance_micro + amount_micro >= 0)
            .values(
                {
                    Account.balance_micro: Account.balance_micro + amount_micro,
                    total: total + total_change,
                }
            )
            .returning(Account.balance_micro)
        )
        balance = (await session.execute(statement)).scalar_one_or_none()
        if balance is None:
            exists = await session.scalar(select(Account.id).where(Account.id == account_id))
            if exists is None:
                raise NotFound("no such account")
            raise PaymentRequired("not enough credits", reason="INSUFFICIENT_CREDITS")
        return balance

    async def _find(self, idempotency_key: str) -> LedgerResult | None:
        async with self._sessions() as session:
            entry = await session.scalar(
                select(LedgerEntry).where(LedgerEntry.idempotency_key == idempotency_key)
            )
        if entry is None:
            return None
        return LedgerResult(
            entry_id=entry.id, applied=False, balance_micro=await self.balance(entry.account_id)
        )
