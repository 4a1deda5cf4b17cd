"""The inference hot path's money on PostgreSQL: one statement, one round trip, per billing step.

Each step is a single statement with data-modifying CTEs, run in autocommit: PostgreSQL makes one
statement one transaction, so the hold (key quota, account balance, ledger entry, usage record) or the
settlement (usage record, refund to key and account, ledger entry) happens entirely or not at all.
The statements run on a plain psycopg pool (no ORM unit of work, no ping before each use; a broken
connection is dropped by the pool when it comes back), and psycopg prepares them after a few uses.

Rows are locked in one order everywhere: the key, then the account. Each CTE that must run after
another refers to it, so PostgreSQL evaluates them in that order.

The one exception to one statement per step is rare: a provider reporting usage that costs more than
the hold. That settlement is one short transaction that locks the usage record, the key and the
account, in that order (`FOR UPDATE`), decides with `charge` what can still be billed, and writes it.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, LiteralString, TypeVar

import psycopg
from psycopg import AsyncConnection, errors
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from server.domain.chat.billing import charge
from server.domain.errors import Unauthenticated
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

T = TypeVar("T")

BALANCE_CONSTRAINT = "ck_accounts_balance_not_negative"

# The key's quota, then the account's balance (its CHECK constraint refuses an overdraft, which aborts
# the whole statement), then the ledger entry and the usage record. It answers 1 when the hold is taken,
# 0 when the key refused it; the division by zero can only fire if the account update missed its row
# after the key's succeeded, and then it undoes the key's hold too.
RESERVE: LiteralString = """
WITH held AS (
    UPDATE api_keys SET used_micro = used_micro + %(amount)s
    WHERE id = %(key_id)s AND active
      AND (quota_micro IS NULL OR used_micro + %(amount)s <= quota_micro)
    RETURNING id
), debited AS (
    UPDATE accounts
    SET balance_micro = balance_micro - %(amount)s, used_micro = used_micro + %(amount)s, updated_at = now()
    WHERE id = %(account_id)s AND EXISTS (SELECT 1 FROM held)
    RETURNING balance_micro
), entry AS (
    INSERT INTO ledger_entries
        (id, account_id, key_id, kind, amount_micro, balance_after_micro, idempotency_key, reference,
         created_at)
    SELECT %(entry_id)s, %(account_id)s, %(key_id)s, 'debit', -%(amount)s, balance_micro,
           %(idempotency_key)s, %(reference)s, now()
    FROM debited
    RETURNING 1
), opened AS (
    INSERT INTO usage_records
        (id, request_id, account_id, key_id, status, requested_model, stream, reserved_micro, billed_micro,
         unbilled_micro, routing_profile, input_tokens, cached_input_tokens, output_tokens, created_at,
         lease_until)
    SELECT %(call_id)s, %(call_id)s, %(account_id)s, %(key_id)s, 'reserved', %(requested_model)s,
           %(stream)s, %(amount)s, 0, 0, %(routing_profile)s, 0, 0, 0, now(),
           now() + make_interval(secs => %(lease)s)
    FROM debited
    RETURNING 1
)
SELECT CASE WHEN h.n = d.n THEN d.n ELSE 1 / (d.n - d.n) END
FROM (SELECT count(*) AS n FROM held) AS h, (SELECT count(*) AS n FROM debited) AS d
"""

# Close the usage record (first close wins) at a cost within its hold (`charge`'s first case; a cost
# beyond it matches no row and takes the transaction below), then give back what was held and not
# billed: the key, then the account (which refers to the key's update to run after it), then the
# refund's ledger entry.
_CLOSE_TEMPLATE = """
WITH closed AS (
    UPDATE usage_records
    SET status = %(status)s, settled_at = now(), error_code = %(error_code)s,
        billed_micro = %(billed)s{facts}
    WHERE id = %(call_id)s AND status = 'reserved' AND reserved_micro >= %(billed)s
    RETURNING reserved_micro - billed_micro AS refund, billed_micro, unbilled_micro, account_id, key_id
), key_refund AS (
    UPDATE api_keys SET used_micro = api_keys.used_micro - closed.refund
    FROM closed
    WHERE api_keys.id = closed.key_id AND closed.refund > 0
    RETURNING api_keys.id
), account_refund AS (
    UPDATE accounts
    SET balance_micro = balance_micro + closed.refund, used_micro = accounts.used_micro - closed.refund,
        updated_at = now()
    FROM closed
    WHERE accounts.id = closed.account_id AND closed.refund > 0
      AND (closed.key_id IS NULL OR EXISTS (SELECT 1 FROM key_refund))
    RETURNING accounts.balance_micro
), entry AS (
    INSERT INTO ledger_entries
        (id, account_id, key_id, kind, amount_micro, balance_after_micro, idempotency_key, reference,
         created_at)
    SELECT %(entry_id)s, closed.account_id, closed.key_id, 'refund', closed.refund,
           account_refund.balance_micro, %(idempotency_key)s, %(reference)s, now()
    FROM closed, account_refund
    RETURNING 1
)
SELECT billed_micro, unbilled_micro FROM closed
"""
_FACTS = """,
        model = %(model)s, provider = %(provider)s, price_rule = %(price_rule)s,
        input_tokens = %(input_tokens)s, cached_input_tokens = %(cached_input_tokens)s,
        output_tokens = %(output_tokens)s, routing_tier = %(routing_tier)s,
        routing_budget = %(routing_budget)s, routing_intelligence = %(routing_intelligence)s"""
CLOSE_WITH_FACTS: LiteralString = _CLOSE_TEMPLATE.replace("{facts}", _FACTS)
CLOSE_WITHOUT_FACTS: LiteralString = _CLOSE_TEMPLATE.replace("{facts}", "")

CLOSED = "SELECT billed_micro, unbilled_micro FROM usage_records WHERE id = %s"

# The settlement beyond the hold, inside its transaction: the rows are locked in this order first.
LOCK_RECORD = """
SELECT reserved_micro, account_id, key_id FROM usage_records
WHERE id = %s AND status = 'reserved' FOR UPDATE
"""
LOCK_KEY = "SELECT quota_micro, used_micro FROM api_keys WHERE id = %s FOR UPDATE"
LOCK_ACCOUNT = "SELECT balance_micro FROM accounts WHERE id = %s FOR UPDATE"
# Then, with the rows locked: bill `extra` beyond the hold to the key and the account (with its ledger
# entry), and close the record.
SETTLE_BEYOND_HOLD: LiteralString = (
    """
WITH key_charge AS (
    UPDATE api_keys SET used_micro = used_micro + %(extra)s
    WHERE id = %(key_id)s AND %(extra)s > 0
    RETURNING id
), account_charge AS (
    UPDATE accounts
    SET balance_micro = balance_micro - %(extra)s, used_micro = used_micro + %(extra)s, updated_at = now()
    WHERE id = %(account_id)s AND %(extra)s > 0
    RETURNING balance_micro
), entry AS (
    INSERT INTO ledger_entries
        (id, account_id, key_id, kind, amount_micro, balance_after_micro, idempotency_key, reference,
         created_at)
    SELECT %(entry_id)s, %(account_id)s, %(key_id)s, 'debit', -%(extra)s, balance_micro,
           %(idempotency_key)s, %(reference)s, now()
    FROM account_charge
    RETURNING 1
)
UPDATE usage_records
SET status = 'settled', settled_at = now(), error_code = NULL, billed_micro = %(billed)s,
    unbilled_micro = %(unbilled)s"""
    + _FACTS
    + """
WHERE id = %(call_id)s
"""
)

RENEW = """
UPDATE usage_records SET lease_until = now() + make_interval(secs => %(lease)s)
WHERE id = %(call_id)s AND status = 'reserved'
"""
EXPIRED = "SELECT id FROM usage_records WHERE status = 'reserved' AND lease_until < now() LIMIT %s"


class PostgresBilling:
    """Holds and settlements on PostgreSQL, each one statement (a cost beyond the hold: one transaction)."""

    def __init__(self, pool: AsyncConnectionPool, lease: timedelta) -> None:
        self._pool = pool
        self._lease_seconds = lease.total_seconds()

    async def _twice(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run `attempt`; when its connection turns out broken (the server restarted or went away),
        check the idle ones too, so later requests do not each find a dead connection, and run it
        once more. Waiting for a connection in vain (the database is down) is not retried."""
        try:
            return await attempt()
        except PoolTimeout:
            raise
        except psycopg.OperationalError:
            await self._pool.check()
            return await attempt()

    async def reserve(self, hold: HoldRequest) -> Held | Refused:
        params = {
            "amount": hold.amount_micro,
            "key_id": hold.key_id,
            "account_id": hold.account_id,
            "entry_id": str(uuid.uuid4()),
            "idempotency_key": hold_key(hold.call_id),
            "reference": reference(hold.call_id),
            "call_id": hold.call_id,
            "requested_model": hold.requested_model,
            "stream": hold.stream,
            "routing_profile": hold.routing_profile,
            "lease": self._lease_seconds,
        }
        try:
            return await self._twice(lambda: self._hold(params))
        except errors.UniqueViolation:
            # Only a second attempt can meet this (each call's ids are new): the first did commit
            # before its connection broke, so the hold is in place.
            return Held(hold.amount_micro)

    async def _hold(self, params: dict[str, Any]) -> Held | Refused:
        async with self._pool.connection() as connection:
            try:
                row = await (await connection.execute(RESERVE, params)).fetchone()
            except errors.CheckViolation as error:
                if error.diag.constraint_name == BALANCE_CONSTRAINT:
                    return Refused(RefusalReason.BALANCE)
                raise
            if row is not None and row[0] == 1:
                return Held(int(params["amount"]))
            active = await (
                await connection.execute("SELECT active FROM api_keys WHERE id = %s", (params["key_id"],))
            ).fetchone()
        if active is None or not active[0]:
            raise Unauthenticated("This API key has been deactivated.", reason="API_KEY_DEACTIVATED")
        return Refused(RefusalReason.QUOTA)

    async def settle(self, call_id: str, cost_micro: int, facts: UsageFacts) -> Settlement:
        return await self._close(call_id, "settled", max(0, cost_micro), facts, None)

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
        params = {"call_id": call_id, "lease": self._lease_seconds}
        return await self._twice(lambda: self._renew(params))

    async def _renew(self, params: dict[str, Any]) -> bool:
        async with self._pool.connection() as connection:
            return (await connection.execute(RENEW, params)).rowcount == 1

    async def release_abandoned(self, limit: int = 500) -> int:
        async with self._pool.connection() as connection:
            expired = [str(row[0]) for row in await (await connection.execute(EXPIRED, (limit,))).fetchall()]
        released = 0
        for call_id in expired:
            closed = await self._close(call_id, "released", 0, None, LEASE_EXPIRED)
            released += closed.closed_now
        return released

    async def _close(
        self, call_id: str, status: str, cost_micro: int, facts: UsageFacts | None, error_code: str | None
    ) -> Settlement:
        """Close the call once; answer how it was closed (by this close or the one that came first)."""
        params: dict[str, Any] = {
            "status": status,
            "error_code": error_code,
            "billed": cost_micro,
            "call_id": call_id,
            "entry_id": str(uuid.uuid4()),
            "idempotency_key": return_key(call_id),
            "reference": reference(call_id),
        }
        if facts is not None:
            params.update(dataclasses.asdict(facts))
        statement = CLOSE_WITHOUT_FACTS if facts is None else CLOSE_WITH_FACTS
        # Safe to run twice: only the first close of a call changes anything.
        return await self._twice(lambda: self._close_once(params, statement, facts))

    async def _close_once(
        self, params: dict[str, Any], statement: LiteralString, facts: UsageFacts | None
    ) -> Settlement:
        async with self._pool.connection() as connection:
            row = await (await connection.execute(statement, params)).fetchone()
            if row is not None:
                return Settlement(billed_micro=int(row[0]), unbilled_micro=int(row[1]), closed_now=True)
            if facts is not None:
                # Closed already, or a cost beyond the hold (a release bills 0, always within it).
                return await self._settle_beyond_hold(connection, params["call_id"], params["billed"], facts)
            return await self._closed(connection, params["call_id"])

    @staticmethod
    async def _closed(connection: AsyncConnection[Any], call_id: str) -> Settlement:
        row = await (await connection.execute(CLOSED, (call_id,))).fetchone()
        billed, unbilled = (int(row[0]), int(row[1])) if row is not None else (0, 0)
        return Settlement(billed_micro=billed, unbilled_micro=unbilled, closed_now=False)

    async def _settle_beyond_hold(
        self, connection: AsyncConnection[Any], call_id: str, cost_micro: int, facts: UsageFacts
    ) -> Settlement:
        async with connection.transaction():
            record = await (await connection.execute(LOCK_RECORD, (call_id,))).fetchone()
            if record is None:
                return await self._closed(connection, call_id)
            reserved, account_id, key_id = int(record[0]), str(record[1]), record[2]
            key_room: int | None = None
            if key_id is not None:
                key = await (await connection.execute(LOCK_KEY, (key_id,))).fetchone()
                if key is not None and key[0] is not None:
                    key_room = int(key[0]) - int(key[1])
            account = await (await connection.execute(LOCK_ACCOUNT, (account_id,))).fetchone()
            balance = int(account[0]) if account is not None else 0
            outcome = charge(reserved, cost_micro, key_room, balance)
            await connection.execute(
                SETTLE_BEYOND_HOLD,
                {
                    **dataclasses.asdict(facts),
                    "extra": outcome.billed_micro - reserved,
                    "billed": outcome.billed_micro,
                    "unbilled": outcome.unbilled_micro,
                    "key_id": key_id,
                    "account_id": account_id,
                    "call_id": call_id,
                    "entry_id": str(uuid.uuid4()),
                    "idempotency_key": overage_key(call_id),
                    "reference": reference(call_id),
                },
            )
        return Settlement(
            billed_micro=outcome.billed_micro, unbilled_micro=outcome.unbilled_micro, closed_now=True
        )
