"""Authenticating the inference API's callers by their `cc_live_` or `cc_agent_` key."""

from __future__ import annotations

import time
from dataclasses import dataclass

from server.db.repositories.accounts import AccountRepository, KeyRow
from server.domain.api_keys import KeyKind, digest, digests_match, looks_like_key
from server.domain.errors import Unauthenticated
from server.domain.key_cache import KeyCache

#: How often, at most, one process records that a key was used.
TOUCH_INTERVAL_SECONDS = 60.0


@dataclass(frozen=True)
class KeyPrincipal:
    """Who is calling: the key and its account."""

    key_id: str
    account_id: str
    kind: KeyKind
    prefix: str


class ApiKeyAuthenticator:
    """Turns a bearer token into a principal, or refuses it (401 in the caller's error shape)."""

    def __init__(self, repository: AccountRepository, cache: KeyCache[KeyRow]) -> None:
        self._repository = repository
        self._cache = cache
        self._touched: dict[str, float] = {}

    async def authenticate(self, token: str | None) -> KeyPrincipal:
        if not token:
            raise Unauthenticated(
                "Missing API key: send `Authorization: Bearer cc_live_...` (or cc_agent_...).",
                reason="MISSING_API_KEY",
            )
        if not looks_like_key(token):
            raise Unauthenticated("Incorrect API key provided.", reason="INVALID_API_KEY")
        secret_digest = digest(token)
        row = self._cache.get(secret_digest)
        if row is None:
            row = await self._repository.key_by_digest(secret_digest)
            if row is not None and row.active:
                self._cache.put(secret_digest, row)
        if row is None or not digests_match(row.secret_digest, token):
            raise Unauthenticated("Incorrect API key provided.", reason="INVALID_API_KEY")
        if not row.active:
            raise Unauthenticated("This API key has been deactivated.", reason="API_KEY_DEACTIVATED")
        await self._touch(row.id)
        kind = KeyKind.AGENT if token.startswith(KeyKind.AGENT.value) else KeyKind.LIVE
        return KeyPrincipal(key_id=row.id, account_id=row.account_id, kind=kind, prefix=row.prefix)

    async def _touch(self, key_id: str) -> None:
        now = time.monotonic()
        if now - self._touched.get(key_id, float("-inf")) >= TOUCH_INTERVAL_SECONDS:
            self._touched[key_id] = now
            await self._repository.touch_key(key_id)
