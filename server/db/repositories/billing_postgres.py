"""The inference hot path's money on PostgreSQL: one statement, one round trip, per billing step.

Each step is a single statement with data-modifying CTEs, run in autocommit: PostgreSQL makes one
statement one transaction, so the hold (key quota, account balance, ledger entry, usage record) or the
settlement (usage record, refund to key and account, ledger entry) happens entirely or not at all.
The statements run on a plain psycopg pool (no ORM unit of work, no ping before each use; a broken
connection is dropped by the pool when it comes back), and psycopg prepares them after a few uses.

Rows are locked in one order everywhere: the key, then the account. Each CTE that must run after
another refers to it, so PostgreSQL evaluates them in that order.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, LiteralString, TypeVar

import psycopg
from psycopg import errors
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from server.domain.errors import PaymentRequired, Unauthenticated

if TYPE_CHECKING:
    from server.db.repositories.usage import UsageFacts

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
         routing_profile, input_tokens, cached_input_tokens, output_tokens, created_at)
    SELECT %(call_id)s, %(call_id)s, %(account_id)s, %(key_id)s, 'reserved', %(requested_model)s,
           %(stream)s, %(amount)s, 0, %(routing_profile)s, 0, 0, 0, now()
    FROM debited
    RETURNING 1
)
SELECT CASE WHEN h.n = d.n THEN d.n ELSE 1 / (d.n - d.n) END
FROM (SELECT count(*) AS n FROM held) AS h, (SELECT count(*) AS n FROM debited) AS d
"""

# Close the usage record (first close wins), then give back what was held and not billed: the key,
# then the account (which refers to the key's update to run after it), then the refund's ledger entry.
_CLOSE_TEMPLATE = """
WITH closed AS (
    UPDATE usage_records
    SET status = %(status)s, settled_at = now(), error_code = %(error_code)s,
        billed_micro = LEAST(reserved_micro, %(billed)s){facts}
    WHERE id = %(call_id)s AND status = 'reserved'
    RETURNING reserved_micro - billed_micro AS refund, billed_micro, account_id, key_id
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
SELECT billed_micro FROM closed
"""
_FACTS = """,
        model = %(model)s, provider = %(provider)s, price_rule = %(price_rule)s,
        input_tokens = %(input_tokens)s, cached_input_tokens = %(cached_input_tokens)s,
        output_tokens = %(output_tokens)s, routing_tier = %(routing_tier)s,
        routing_budget = %(routing_budget)s, routing_intelligence = %(routing_intelligence)s"""
CLOSE_WITH_FACTS: LiteralString = _CLOSE_TEMPLATE.replace("{facts}", _FACTS)
CLOSE_WITHOUT_FACTS: LiteralString = _CLOSE_TEMPLATE.replace("{facts}", "")


class PostgresBilling:
    """Holds and settlements on PostgreSQL, each one statement."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

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
        """Hold `amount_micro` on the key and the account and open the usage record, or raise."""
        params = {
            "amount": amount_micro,
            "key_id": key_id,
            "account_id": account_id,
            "entry_id": str(uuid.uuid4()),
            "idempotency_key": f"usage:{call_id}:hold",
            "reference": f"usage {call_id}",
            "call_id": call_id,
            "requested_model": requested_model,
            "stream": stream,
            "routing_profile": routing_profile,
        }
        try:
            held = await self._twice(lambda: self._hold(params))
        except errors.UniqueViolation:
            # Only a second attempt can meet this (each call's ids are new): the first did commit
            # before its connection broke, so the hold is in place.
            held = True
        if held:
            return
        raise PaymentRequired(
            "This key's credit quota does not cover this request.", reason="INSUFFICIENT_CREDITS"
        )

    async def _hold(self, params: dict[str, Any]) -> bool:
        async with self._pool.connection() as connection:
            try:
                row = await (await connection.execute(RESERVE, params)).fetchone()
            except errors.CheckViolation as error:
                if error.diag.constraint_name == BALANCE_CONSTRAINT:
                    raise PaymentRequired(
                        "Not enough credits for this request: top up or ask for fewer tokens.",
                        reason="INSUFFICIENT_CREDITS",
                    ) from None
                raise
            if row is not None and row[0] == 1:
                return True
            active = await (
                await connection.execute("SELECT active FROM api_keys WHERE id = %s", (params["key_id"],))
            ).fetchone()
        if active is None or not active[0]:
            raise Unauthenticated("This API key has been deactivated.", reason="API_KEY_DEACTIVATED")
        return False

    async def close(
        self, call_id: str, status: str, billed_micro: int, facts: UsageFacts | None, error_code: str | None
    ) -> int:
        """Close the call once; return what it was billed (by whichever close came first)."""
        params: dict[str, Any] = {
            "status": status,
            "error_code": error_code,
            "billed": billed_micro,
            "call_id": call_id,
            "entry_id": str(uuid.uuid4()),
            "idempotency_key": f"usage:{call_id}:return",
            "reference": f"usage {call_id}",
        }
        if facts is not None:
            params.update(dataclasses.asdict(facts))
        statement = CLOSE_WITHOUT_FACTS if facts is None else CLOSE_WITH_FACTS
        # Safe to run twice: only the first close of a call changes anything.
        return await self._twice(lambda: self._close(params, statement))

    async def _close(self, params: dict[str, Any], statement: LiteralString) -> int:
        async with self._pool.connection() as connection:
            row = await (await connection.execute(statement, params)).fetchone()
            if row is not None:
                return int(row[0])
            billed = await (
                await connection.execute(
                    "SELECT billed_micro FROM usage_records WHERE id = %s", (params["call_id"],)
                )
            ).fetchone()
        return int(billed[0]) if billed is not None else 0
