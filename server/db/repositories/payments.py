"""x402 payments: an authorisation is claimed before anyone settles it, moves between states only by
conditional updates (so two replicas can never both move it), and is credited with its transaction
hash once. Every change of state writes an audit event in the same transaction."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.db.models import LedgerEntry, X402Payment, X402PaymentEvent, as_utc, utcnow
from server.db.repositories.ledger import LedgerRepository
from server.domain.errors import Conflict

#: States a payment never leaves.
FINAL = ("settled", "failed", "expired")
#: States whose outcome someone must still establish.
OPEN = ("pending", "settling", "unknown")
#: States whose row says why (`error_reason`).
DOUBTFUL_OR_FAILED = ("failed", "expired", "unknown")


@dataclass(frozen=True)
class PaymentRow:
    """A payment as stored."""

    id: str
    account_id: str
    key_id: str | None
    status: str
    version: int
    network: str
    chain_id: int | None
    asset: str
    payer: str
    pay_to: str
    nonce: str
    valid_before: int
    amount_atomic: int
    amount_usd_micro: int
    credits_micro: int
    tx_hash: str
    error_reason: str
    resolved_by: str
    from_block: int | None
    lease_until: datetime | None
    created_at: datetime
    updated_at: datetime

    def leased(self, now: datetime) -> bool:
        """Whether a request or reconciler still owns it."""
        return self.lease_until is not None and self.lease_until > now


def _row(payment: X402Payment) -> PaymentRow:
    return PaymentRow(
        id=payment.id,
        account_id=payment.account_id,
        key_id=payment.key_id,
        status=payment.status,
        version=payment.x402_version,
        network=payment.network,
        chain_id=payment.chain_id,
        asset=payment.asset,
        payer=payment.payer,
        pay_to=payment.pay_to,
        nonce=payment.nonce,
        valid_before=payment.valid_before,
        amount_atomic=payment.amount_atomic,
        amount_usd_micro=payment.amount_usd_micro,
        credits_micro=payment.credits_micro,
        tx_hash=payment.tx_hash or "",
        error_reason=payment.error_reason or "",
        resolved_by=payment.resolved_by or "",
        from_block=payment.from_block,
        lease_until=as_utc(payment.lease_until) if payment.lease_until else None,
        created_at=as_utc(payment.created_at),
        updated_at=as_utc(payment.updated_at),
    )


@dataclass(frozen=True)
class NewPayment:
    """What a presented payment authorises."""

    account_id: str
    key_id: str
    version: int
    network: str
    chain_id: int
    asset: str
    payer: str
    pay_to: str
    nonce: str
    valid_before: int
    amount_atomic: int
    amount_usd_micro: int
    credits_micro: int


@dataclass(frozen=True)
class PaymentEventRow:
    """One audited change of a payment's state."""

    from_status: str
    to_status: str
    actor: str
    detail: str
    created_at: datetime


class PaymentRepository:
    """Claim, move between states, credit, and find the ones in doubt."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def claim(self, new: NewPayment, lease: timedelta) -> PaymentRow | None:
        """Record a first sight of the authorisation as `pending`, owned for `lease`. None when it is
        known already (any version, any state): then `find` it."""
        try:
            async with self._sessions.begin() as session:
                payment = X402Payment(
                    account_id=new.account_id,
                    key_id=new.key_id,
                    x402_version=new.version,
                    network=new.network,
                    chain_id=new.chain_id,
                    asset=new.asset.lower(),
                    payer=new.payer.lower(),
                    pay_to=new.pay_to.lower(),
                    nonce=new.nonce.lower(),
                    valid_before=new.valid_before,
                    amount_atomic=new.amount_atomic,
                    amount_usd_micro=new.amount_usd_micro,
                    credits_micro=new.credits_micro,
                    status="pending",
                    lease_until=utcnow() + lease,
                )
                session.add(payment)
                await session.flush()
                session.add(
                    X402PaymentEvent(
                        payment_id=payment.id, from_status=None, to_status="pending", actor="request"
                    )
                )
                return _row(payment)
        except IntegrityError:
            return None

    async def find(self, chain_id: int, asset: str, payer: str, nonce: str) -> PaymentRow | None:
        """The payment of this authorisation, however it was presented."""
        async with self._sessions() as session:
            payment = await session.scalar(
                select(X402Payment).where(
                    X402Payment.chain_id == chain_id,
                    X402Payment.asset == asset.lower(),
                    X402Payment.payer == payer.lower(),
                    X402Payment.nonce == nonce.lower(),
                )
            )
        return None if payment is None else _row(payment)

    async def get(self, payment_id: str) -> PaymentRow | None:
        async with self._sessions() as session:
            payment = await session.get(X402Payment, payment_id)
        return None if payment is None else _row(payment)

    async def move(
        self,
        payment_id: str,
        from_states: Iterable[str],
        to_status: str,
        *,
        actor: str,
        detail: str = "",
        lease: timedelta | None = None,
        only_unleased: bool = False,
        **values: Any,
    ) -> PaymentRow | None:
        """Move the payment from one of `from_states` to `to_status`, owned for `lease` (None: nobody
        owns it); with `only_unleased`, only when nobody owns it now. None when it was not in such a
        state (someone else moved it first): nothing changed."""
        now = utcnow()
        conditions = [X402Payment.id == payment_id, X402Payment.status.in_(tuple(from_states))]
        if only_unleased:
            conditions.append(or_(X402Payment.lease_until.is_(None), X402Payment.lease_until <= now))
        values.setdefault("error_reason", detail[:200] or None if to_status in DOUBTFUL_OR_FAILED else None)
        async with self._sessions.begin() as session:
            before = await session.scalar(select(X402Payment.status).where(X402Payment.id == payment_id))
            moved = await session.execute(
                update(X402Payment)
                .where(*conditions)
                .values(
                    status=to_status,
                    lease_until=None if lease is None else now + lease,
                    updated_at=now,
                    **values,
                )
                .returning(X402Payment.id)
            )
            if moved.first() is None:
                return None
            if before != to_status or detail:
                session.add(
                    X402PaymentEvent(
                        payment_id=payment_id,
                        from_status=before,
                        to_status=to_status,
                        actor=actor,
                        detail=detail[:500] or None,
                    )
                )
            payment = await session.get(X402Payment, payment_id, populate_existing=True)
            assert payment is not None
            return _row(payment)

    async def settle(
        self,
        payment_id: str,
        tx_hash: str,
        from_states: Iterable[str],
        *,
        actor: str,
        resolved_by: str,
        detail: str = "",
    ) -> PaymentRow | None:
        """Mark it settled with its transaction and credit the account, in one transaction, once.
        None when it was not in one of `from_states` (then nothing was credited by this call)."""
        try:
            return await self._settle(payment_id, tx_hash, from_states, actor, resolved_by, detail)
        except IntegrityError:
            raise Conflict(
                "this transaction hash is recorded for another payment", reason="TRANSACTION_ALREADY_USED"
            ) from None

    async def _settle(
        self,
        payment_id: str,
        tx_hash: str,
        from_states: Iterable[str],
        actor: str,
        resolved_by: str,
        detail: str,
    ) -> PaymentRow | None:
        now = utcnow()
        async with self._sessions.begin() as session:
            before = await session.scalar(select(X402Payment.status).where(X402Payment.id == payment_id))
            moved = (
                await session.execute(
                    update(X402Payment)
                    .where(X402Payment.id == payment_id, X402Payment.status.in_(tuple(from_states)))
                    .values(
                        status="settled",
                        tx_hash=tx_hash,
                        settled_at=now,
                        updated_at=now,
                        lease_until=None,
                        error_reason=None,
                        resolved_by=resolved_by,
                    )
                    .returning(X402Payment.account_id, X402Payment.key_id, X402Payment.credits_micro)
                )
            ).first()
            if moved is None:
                return None
            account_id, key_id, credits_micro = moved
            balance = await LedgerRepository.move(session, account_id, credits_micro, "purchase")
            session.add(
                LedgerEntry(
                    account_id=account_id,
                    key_id=key_id,
                    kind="purchase",
                    amount_micro=credits_micro,
                    balance_after_micro=balance,
                    idempotency_key=f"x402:{payment_id}",
                    reference=f"x402 {tx_hash}",
                )
            )
            session.add(
                X402PaymentEvent(
                    payment_id=payment_id,
                    from_status=before,
                    to_status="settled",
                    actor=actor,
                    detail=(detail or f"{resolved_by}: {tx_hash}")[:500],
                )
            )
            await session.flush()
            payment = await session.get(X402Payment, payment_id, populate_existing=True)
            assert payment is not None
            return _row(payment)

    async def take_for_reconciling(
        self, limit: int, lease: timedelta, *, include_unknown: bool
    ) -> list[PaymentRow]:
        """Own, for `lease`, up to `limit` payments nobody owns whose outcome is open: `pending` or
        `settling` ones whose request's lease ran out (it died), and with `include_unknown` the
        `unknown` ones. On PostgreSQL the rows are picked `FOR UPDATE SKIP LOCKED`, so replicas
        reconciling together never pick the same."""
        now = utcnow()
        abandoned = and_(X402Payment.status.in_(("pending", "settling")), X402Payment.lease_until <= now)
        unknown = and_(
            X402Payment.status == "unknown",
            or_(X402Payment.lease_until.is_(None), X402Payment.lease_until <= now),
        )
        async with self._sessions.begin() as session:
            candidates = (
                select(X402Payment.id)
                .where(
                    or_(abandoned, unknown) if include_unknown else abandoned,
                    X402Payment.chain_id.is_not(None),
                )
                .order_by(X402Payment.updated_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            ids = list(await session.scalars(candidates))
            if not ids:
                return []
            await session.execute(
                update(X402Payment).where(X402Payment.id.in_(ids)).values(lease_until=now + lease)
            )
            payments = await session.scalars(
                select(X402Payment).where(X402Payment.id.in_(ids)).execution_options(populate_existing=True)
            )
            return [_row(payment) for payment in payments]

    async def in_doubt(self, limit: int) -> list[PaymentRow]:
        """Payments whose outcome is not known, oldest first: `unknown`, and `pending`/`settling` ones
        whose request is gone."""
        now = utcnow()
        async with self._sessions() as session:
            payments = await session.scalars(
                select(X402Payment)
                .where(
                    or_(
                        X402Payment.status == "unknown",
                        and_(X402Payment.status.in_(("pending", "settling")), X402Payment.lease_until <= now),
                    )
                )
                .order_by(X402Payment.created_at)
                .limit(limit)
            )
            return [_row(payment) for payment in payments]

    async def events(self, payment_id: str) -> list[PaymentEventRow]:
        """The payment's audit trail, oldest first."""
        async with self._sessions() as session:
            events = await session.scalars(
                select(X402PaymentEvent)
                .where(X402PaymentEvent.payment_id == payment_id)
                .order_by(X402PaymentEvent.created_at)
            )
            return [
                PaymentEventRow(
                    from_status=event.from_status or "",
                    to_status=event.to_status,
                    actor=event.actor,
                    detail=event.detail or "",
                    created_at=as_utc(event.created_at),
                )
                for event in events
            ]
