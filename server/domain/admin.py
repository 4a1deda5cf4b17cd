"""Operator actions, reached only over gRPC: grant or revoke credits, look an account up."""

from __future__ import annotations

import hmac
import logging
import re
from dataclasses import dataclass

from server.db.repositories.accounts import AccountRepository, AccountRow
from server.db.repositories.ledger import LedgerRepository, LedgerResult
from server.db.repositories.payments import OPEN, PaymentEventRow, PaymentRepository, PaymentRow
from server.domain.errors import Conflict, InvalidArgument, NotFound, PermissionDenied, Unauthenticated

logger = logging.getLogger(__name__)

MAX_IDEMPOTENCY_KEY = 200
MAX_REASON = 500
MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 50
TX_HASH = re.compile(r"^0x[0-9a-fA-F]{64}$")


@dataclass(frozen=True)
class PaymentView:
    """A payment with its audit trail."""

    payment: PaymentRow
    events: list[PaymentEventRow]


@dataclass(frozen=True)
class AccountSummary:
    """An account as an operator sees it."""

    account: AccountRow
    key_count: int


class Administration:
    """Guarded by the administrator token; every change is a ledger entry with an idempotency key."""

    def __init__(
        self,
        token: str,
        ledger: LedgerRepository,
        accounts: AccountRepository,
        payments: PaymentRepository,
    ) -> None:
        self._token = token
        self._ledger = ledger
        self._accounts = accounts
        self._payments = payments

    def check_token(self, presented: str | None) -> None:
        """Refuse callers without the administrator token (and everyone when none is configured)."""
        if not self._token:
            raise PermissionDenied("administration is disabled: CROSSCOMPUTE_ADMIN_TOKEN is not set")
        if not presented:
            raise Unauthenticated("the administrator token is missing", reason="MISSING_ADMIN_TOKEN")
        if not hmac.compare_digest(presented.encode(), self._token.encode()):
            raise Unauthenticated("the administrator token is not valid", reason="INVALID_ADMIN_TOKEN")

    async def grant(
        self, account_id: str, amount_micro: int, idempotency_key: str, reason: str
    ) -> LedgerResult:
        """Add (or, negative, revoke) credits once per idempotency key."""
        if amount_micro == 0:
            raise InvalidArgument("amount_micro_credits must not be zero", param="amount_micro_credits")
        if not 1 <= len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
            raise InvalidArgument("idempotency_key must be 1 to 200 characters", param="idempotency_key")
        if len(reason) > MAX_REASON:
            raise InvalidArgument("reason must be at most 500 characters", param="reason")
        return await self._ledger.apply(
            account_id,
            amount_micro,
            kind="grant" if amount_micro > 0 else "revoke",
            idempotency_key=f"admin:{idempotency_key}",
            reference=reason or None,
        )

    async def account(self, *, account_id: str = "", user_id: str = "", agent_id: str = "") -> AccountSummary:
        """Look an account up by exactly one of its names."""
        if account_id:
            row = await self._accounts.find_account(account_id=account_id)
        elif user_id:
            row = await self._accounts.find_account(kind="person", external_id=user_id)
        elif agent_id:
            row = await self._accounts.find_account(kind="agent", external_id=agent_id)
        else:
            raise InvalidArgument("name the account by account_id, user_id or agent_id", param="lookup")
        if row is None:
            raise NotFound("no such account", reason="ACCOUNT_NOT_FOUND")
        return AccountSummary(account=row, key_count=await self._accounts.count_keys(row.id))

    async def payments_in_doubt(self, page_size: int) -> list[PaymentView]:
        """x402 payments whose outcome is not known, oldest first, with their audit trails."""
        if not 0 <= page_size <= MAX_PAGE_SIZE:
            raise InvalidArgument("page_size must be 0 to 500", param="page_size")
        rows = await self._payments.in_doubt(page_size or DEFAULT_PAGE_SIZE)
        return [PaymentView(row, await self._payments.events(row.id)) for row in rows]

    async def resolve_payment(self, payment_id: str, outcome: str, tx_hash: str, reason: str) -> PaymentView:
        """Close a payment in doubt by the operator's evidence: `settled` credits it once with
        `tx_hash`; `failed` credits nothing. Asking again for the same outcome changes nothing."""
        if not 1 <= len(reason.strip()) <= MAX_REASON:
            raise InvalidArgument("reason must say the evidence, in 1 to 500 characters", param="reason")
        if outcome == "settled" and not TX_HASH.match(tx_hash):
            raise InvalidArgument("tx_hash must be 0x and 64 hexadecimal digits", param="tx_hash")
        if outcome not in {"settled", "failed"}:
            raise InvalidArgument("outcome must be settled or failed", param="outcome")
        row = await self._payments.get(payment_id)
        if row is None:
            raise NotFound("no such payment", reason="PAYMENT_NOT_FOUND")
        detail = f"operator: {reason.strip()}"
        if outcome == "settled":
            done = await self._payments.settle(
                payment_id, tx_hash.lower(), OPEN, actor="operator", resolved_by="operator", detail=detail
            )
            repeated = row.status == "settled" and row.tx_hash == tx_hash.lower()
        else:
            done = await self._payments.move(
                payment_id, OPEN, "failed", actor="operator", detail=detail, resolved_by="operator"
            )
            repeated = row.status == "failed" and row.resolved_by == "operator"
        if done is None and not repeated:
            current = await self._payments.get(payment_id)
            status = current.status if current else row.status
            raise Conflict(f"the payment is {status}, not in doubt", reason="PAYMENT_NOT_IN_DOUBT")
        logger.warning("operator resolved x402 payment %s as %s", payment_id, outcome)
        final = done or row
        return PaymentView(final, await self._payments.events(payment_id))
