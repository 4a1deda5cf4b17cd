"""A call's money on SQLite (the embedded default), through SQLAlchemy: one short transaction per step.

Each transaction's first statement writes, so it takes SQLite's write lock before it reads anything:
steps run one after another, and what a step reads cannot change under it. Every balance change has
its ledger entry in the same transaction.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.db.models import Account, ApiKey, LedgerEntry, UsageRecord, utcnow
from server.db.repositories.ledger import LedgerRepository
from server.domain.chat.billing import charge
from server.domain.errors import PaymentRequired, Unauthenticated
from server.domain.holds import (
    LEASE_EXPIRED,
    Held,
    HoldRequest,
    RefusalReason,
    Refused,
    ReleaseStatus,
    Settlement,
    UsageFacts,
    hold_key,
    overage_key,
    reference,
    return_key,
)

_DEACTIVATED = "This API key has been deactivated."


class SqliteBilling:
    """Holds and settlements with the ORM, each one transaction."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], lease: timedelta) -> None:
        self._sessions = sessions
        self._lease = lease

    async def reserve(self, hold: HoldRequest) -> Held | Refused:
        try:
            async with self._sessions.begin() as session:
                return await self._reserve(session, hold)
        except PaymentRequired:
            # The balance could not pay the hold: the transaction rolled back, the key's hold with it.
            return Refused(RefusalReason.BALANCE)

    async def _reserve(self, session: AsyncSession, hold: HoldRequest) -> Held | Refused:
        amount = hold.amount_micro
        held = await session.execute(
            update(ApiKey)
            .where(
                ApiKey.id == hold.key_id,
                ApiKey.active,
                ApiKey.quota_micro.is_(None) | (ApiKey.used_micro + amount <= ApiKey.quota_micro),
            )
            .values(used_micro=ApiKey.used_micro + amount)
            .returning(ApiKey.id)
        )
        if held.first() is None:
            if not await session.scalar(select(ApiKey.active).where(ApiKey.id == hold.key_id)):
                raise Unauthenticated(_DEACTIVATED, reason="API_KEY_DEACTIVATED")
            return Refused(RefusalReason.QUOTA)
        balance = await LedgerRepository.move(session, hold.account_id, -amount, "debit")
        session.add(
            LedgerEntry(
                account_id=hold.account_id,
                key_id=hold.key_id,
                kind="debit",
                amount_micro=-amount,
                balance_after_micro=balance,
                idempotency_key=hold_key(hold.call_id),
                reference=reference(hold.call_id),
            )
        )
        now = utcnow()
        session.add(
            UsageRecord(
                id=hold.call_id,
                request_id=hold.call_id,
                account_id=hold.account_id,
                key_id=hold.key_id,
                status="reserved",
                requested_model=hold.requested_model,
                stream=hold.stream,
                reserved_micro=amount,
                routing_profile=hold.routing_profile,
                created_at=now,
                lease_until=now + self._lease,
            )
        )
        return Held(amount)

    async def settle(self, call_id: str, cost_micro: int, facts: UsageFacts) -> Settlement:
        return await self._close(call_id, "settled", cost_micro, facts, None)

    async def release(
        self,
        call_id: str,
        error_code: str,
        *,
        status: ReleaseStatus = "failed",
        facts: UsageFacts | None = None,
    ) -> None:
        await self._close(call_id, status, 0, facts, error_code)

    async def renew(self, call_id: str) -> bool:
        async with self._sessions.begin() as session:
            renewed = await session.execute(
                update(UsageRecord)
                .where(UsageRecord.id == call_id, UsageRecord.status == "reserved")
                .values(lease_until=utcnow() + self._lease)
                .returning(UsageRecord.id)
            )
            return renewed.first() is not None

    async def release_abandoned(self, limit: int = 500) -> int:
        async with self._sessions() as session:
            expired = list(
                await session.scalars(
                    select(UsageRecord.id)
                    .where(UsageRecord.status == "reserved", UsageRecord.lease_until < utcnow())
                    .limit(limit)
                )
            )
        released = 0
        for call_id in expired:
            closed = await self._close(call_id, "released", 0, None, LEASE_EXPIRED)
            released += closed.closed_now
        return released

    async def _close(
        self, call_id: str, status: str, cost_micro: int, facts: UsageFacts | None, error_code: str | None
    ) -> Settlement:
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
        async with self._sessions.begin() as session:
            # First close wins: only a record still reserved changes. Within the hold, the cost is
            # billed here and now (`charge`'s first case); beyond it, the excess is decided below.
            closed = (
                await session.execute(
                    update(UsageRecord)
                    .where(UsageRecord.id == call_id, UsageRecord.status == "reserved")
                    .values(billed_micro=func.min(UsageRecord.reserved_micro, cost_micro), **values)
                    .returning(UsageRecord.reserved_micro, UsageRecord.account_id, UsageRecord.key_id)
                )
            ).first()
            if closed is None:
                earlier = (
                    await session.execute(
                        select(UsageRecord.billed_micro, UsageRecord.unbilled_micro).where(
                            UsageRecord.id == call_id
                        )
                    )
                ).first()
                billed, unbilled = earlier if earlier is not None else (0, 0)
                return Settlement(billed_micro=billed, unbilled_micro=unbilled, closed_now=False)
            reserved, account_id, key_id = closed
            outcome = charge(reserved, cost_micro, None, 0)
            if cost_micro > reserved:
                key_room, balance = await self._room(session, key_id, account_id)
                outcome = charge(reserved, cost_micro, key_room, balance)
                await session.execute(
                    update(UsageRecord)
                    .where(UsageRecord.id == call_id)
                    .values(billed_micro=outcome.billed_micro, unbilled_micro=outcome.unbilled_micro)
                )
            # The key's quota, then the account's balance: the order reserve() moves them in.
            change = outcome.billed_micro - reserved  # < 0: give the rest back; > 0: bill beyond the hold
            if change != 0:
                if key_id is not None:
                    await session.execute(
                        update(ApiKey)
                        .where(ApiKey.id == key_id)
                        .values(used_micro=ApiKey.used_micro + change)
                    )
                kind = "refund" if change < 0 else "debit"
                balance_after = await LedgerRepository.move(session, account_id, -change, kind)
                session.add(
                    LedgerEntry(
                        account_id=account_id,
                        key_id=key_id,
                        kind=kind,
                        amount_micro=-change,
                        balance_after_micro=balance_after,
                        idempotency_key=return_key(call_id) if change < 0 else overage_key(call_id),
                        reference=reference(call_id),
                    )
                )
            return Settlement(
                billed_micro=outcome.billed_micro, unbilled_micro=outcome.unbilled_micro, closed_now=True
            )

    @staticmethod
    async def _room(session: AsyncSession, key_id: str | None, account_id: str) -> tuple[int | None, int]:
        """What the key's quota (None: no quota) and the account's balance can still pay."""
        balance = await session.scalar(select(Account.balance_micro).where(Account.id == account_id))
        if key_id is None:
            return None, int(balance or 0)
        row = (
            await session.execute(select(ApiKey.quota_micro, ApiKey.used_micro).where(ApiKey.id == key_id))
        ).first()
        if row is None or row[0] is None:
            return None, int(balance or 0)
        return int(row[0]) - int(row[1]), int(balance or 0)
