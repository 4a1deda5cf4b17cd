"""Operator actions, reached only over gRPC: grant or revoke credits, look an account up."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from server.db.repositories.accounts import AccountRepository, AccountRow
from server.db.repositories.ledger import LedgerRepository, LedgerResult
from server.domain.errors import InvalidArgument, NotFound, PermissionDenied, Unauthenticated

MAX_IDEMPOTENCY_KEY = 200
MAX_REASON = 500


@dataclass(frozen=True)
class AccountSummary:
    """An account as an operator sees it."""

    account: AccountRow
    key_count: int


class Administration:
    """Guarded by the administrator token; every change is a ledger entry with an idempotency key."""

    def __init__(self, token: str, ledger: LedgerRepository, accounts: AccountRepository) -> None:
        self._token = token
        self._ledger = ledger
        self._accounts = accounts

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
