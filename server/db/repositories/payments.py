"""x402 payments: a nonce is claimed before settling, and credited with its transaction hash once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.db.models import LedgerEntry, X402Payment, as_utc, utcnow
from server.db.repositories.ledger import LedgerRepository


@dataclass(frozen=True)
class PaymentRow:
    """A payment as stored."""

    id: str
    account_id: str
    status: str
    amount_usd_micro: int
    credits_micro: int
    tx_hash: str
    network: str
    payer: str
    created_at: datetime


def _row(payment: X402Payment) -> PaymentRow:
    return PaymentRow(
        id=payment.id,
        account_id=payment.account_id,
        status=payment.status,
        amount_usd_micro=payment.amount_usd_micro,
        credits_micro=payment.credits_micro,
        tx_hash=payment.tx_hash or "",
        network=payment.network,
        payer=payment.payer,
        created_at=as_utc(payment.created_at),
    )


@dataclass(frozen=True)
class NewPayment:
    """What a presented payment authorises."""

    account_id: str
    key_id: str
    version: int
    network: str
    asset: str
    payer: str
    pay_to: str
    nonce: str
    amount_atomic: int
    amount_usd_micro: int
    credits_micro: int


class PaymentRepository:
    """Claim, settle, fail."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def claim(self, new: NewPayment) -> tuple[bool, PaymentRow]:
        """Reserve the authorisation's nonce. (True, row) when this call may settle it; (False, row)
        when it is settled or being settled elsewhere. A failed attempt may be claimed again."""
        try:
            async with self._sessions.begin() as session:
                payment = X402Payment(
                    account_id=new.account_id,
                    key_id=new.key_id,
                    x402_version=new.version,
                    network=new.network,
                    asset=new.asset.lower(),
                    payer=new.payer.lower(),
                    pay_to=new.pay_to.lower(),
                    nonce=new.nonce.lower(),
                    amount_atomic=new.amount_atomic,
                    amount_usd_micro=new.amount_usd_micro,
                    credits_micro=new.credits_micro,
                    status="pending",
                )
                session.add(payment)
                await session.flush()
                return True, _row(payment)
        except IntegrityError:
            pass
        async with self._sessions.begin() as session:
            existing = await session.scalar(
                select(X402Payment).where(
                    X402Payment.network == new.network,
                    X402Payment.asset == new.asset.lower(),
                    X402Payment.payer == new.payer.lower(),
                    X402Payment.nonce == new.nonce.lower(),
                )
            )
            assert existing is not None
            if existing.status == "failed":
                retried = await session.execute(
                    update(X402Payment)
                    .where(X402Payment.id == existing.id, X402Payment.status == "failed")
                    .values(status="pending", error_reason=None)
                    .returning(X402Payment.id)
                )
                if retried.first() is not None:
                    existing.status = "pending"
                    return True, _row(existing)
            return False, _row(existing)

    async def fail(self, payment_id: str, reason: str) -> None:
        async with self._sessions.begin() as session:
            await session.execute(
                update(X402Payment)
                .where(X402Payment.id == payment_id, X402Payment.status == "pending")
                .values(status="failed", error_reason=reason[:200])
            )

    async def settle(self, payment_id: str, tx_hash: str, account_id: str, key_id: str) -> PaymentRow:
        """Record the transaction and credit the account, in one transaction, once."""
        async with self._sessions.begin() as session:
            payment = await session.scalar(
                select(X402Payment).where(X402Payment.id == payment_id).with_for_update()
            )
            assert payment is not None
            if payment.status != "pending":
                return _row(payment)
            payment.status = "settled"
            payment.tx_hash = tx_hash
            payment.settled_at = utcnow()
            balance = await LedgerRepository.move(session, account_id, payment.credits_micro, "purchase")
            session.add(
                LedgerEntry(
                    account_id=account_id,
                    key_id=key_id,
                    kind="purchase",
                    amount_micro=payment.credits_micro,
                    balance_after_micro=balance,
                    idempotency_key=f"x402:{payment.id}",
                    reference=f"x402 {tx_hash}",
                )
            )
            await session.flush()
            return _row(payment)
