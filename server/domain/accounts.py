"""People's accounts: who is signed in, bootstrap, and their API keys."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from server.db.repositories.accounts import AccountRepository, Bootstrap, KeyRow, PersonRow
from server.domain.api_keys import KeyKind, make_key
from server.domain.credits import credits_to_micro
from server.domain.errors import Conflict, InvalidArgument, NotFound
from server.domain.key_cache import KeyCache
from server.domain.supabase_tokens import SignedInUser

FIRST_KEY_LABEL = "Default"
MAX_LABEL_LENGTH = 100


@dataclass(frozen=True)
class AccountPolicy:
    """The limits people's accounts live under (from the settings)."""

    signup_micro: int
    max_active_keys: int
    max_quota_micro: int


@dataclass(frozen=True)
class Me:
    """What `/api/me` says: the user and, once bootstrapped, the rest."""

    user: SignedInUser
    person: PersonRow | None


@dataclass(frozen=True)
class CreatedKey:
    """A new key and its secret, which is never shown again."""

    key: KeyRow
    secret: str


@dataclass(frozen=True)
class BootstrapOutcome:
    """What bootstrap did; `secret` only when it created the first key."""

    bootstrap: Bootstrap
    secret: str | None


class PeopleAccounts:
    """The operations behind `/api/me`, `/api/bootstrap-account` and `/api/keys*`."""

    def __init__(
        self, repository: AccountRepository, policy: AccountPolicy, key_cache: KeyCache[KeyRow]
    ) -> None:
        self._repository = repository
        self._policy = policy
        self._key_cache = key_cache

    async def me(self, user: SignedInUser) -> Me:
        return Me(user=user, person=await self._repository.find_person(user.id))

    async def bootstrap(self, user: SignedInUser) -> BootstrapOutcome:
        existing = await self._repository.find_person(user.id)
        if existing is not None:
            keys = await self._repository.list_keys(existing.account.id)
            return BootstrapOutcome(
                Bootstrap(created=False, person=existing, first_key=keys[-1]), secret=None
            )
        key = make_key(KeyKind.LIVE)
        outcome = await self._repository.bootstrap_person(
            user.id, user.email, self._policy.signup_micro, key, FIRST_KEY_LABEL
        )
        return BootstrapOutcome(outcome, secret=key.secret if outcome.created else None)

    async def list_keys(self, user: SignedInUser) -> list[KeyRow]:
        person = await self._repository.find_person(user.id)
        return [] if person is None else await self._repository.list_keys(person.account.id)

    async def create_key(self, user: SignedInUser, label: str, quota_credits: float | None) -> CreatedKey:
        label = label.strip()
        if not 1 <= len(label) <= MAX_LABEL_LENGTH:
            raise InvalidArgument(f"label must be 1 to {MAX_LABEL_LENGTH} characters", param="label")
        quota_micro = None
        if quota_credits is not None:
            quota_micro = credits_to_micro(quota_credits, param="quotaCredits")
            if not 0 <= quota_micro <= self._policy.max_quota_micro:
                raise InvalidArgument(
                    f"quotaCredits must be between 0 and {self._policy.max_quota_micro // 1_000_000}",
                    param="quotaCredits",
                )
        person = await self._repository.find_person(user.id)
        if person is None:
            raise Conflict(
                "the account is not bootstrapped yet: call POST /api/bootstrap-account first",
                reason="NOT_BOOTSTRAPPED",
            )
        key = make_key(KeyKind.LIVE)
        row = await self._repository.create_key(
            person.account.id, key, label, quota_micro, self._policy.max_active_keys
        )
        return CreatedKey(key=row, secret=key.secret)

    async def deactivate_key(self, user: SignedInUser, key_id: str) -> KeyRow:
        try:
            canonical = str(uuid.UUID(key_id))
        except ValueError:
            raise InvalidArgument("the key id must be a UUID", param="id") from None
        person = await self._repository.find_person(user.id)
        row = None if person is None else await self._repository.deactivate_key(person.account.id, canonical)
        if row is None:
            raise NotFound("no such key", reason="KEY_NOT_FOUND")
        self._key_cache.forget(row.secret_digest)
        return row
