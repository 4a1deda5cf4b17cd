"""A short-lived cache of API key lookups that never outlives a deactivation.

Within a process, a deactivation evicts the key at once. Across replicas, the deactivating replica
publishes the key's digest (PostgreSQL NOTIFY, sent when the deactivation commits) and every
replica's listener evicts it. While a replica's listener is not connected, its cache is bypassed:
every lookup goes to the database, so a missed notification can never keep a dead key alive.
"""

from __future__ import annotations

import time
from typing import Generic, TypeVar

V = TypeVar("V")


class KeyCache(Generic[V]):
    """Entries by key digest, each for at most `ttl_seconds`."""

    def __init__(self, ttl_seconds: float, *, needs_listener: bool) -> None:
        self._ttl = ttl_seconds
        self._entries: dict[str, tuple[float, V]] = {}
        #: On a shared database the cache is only trusted while invalidations are heard.
        self._trusted = not needs_listener

    @property
    def trusted(self) -> bool:
        """Whether entries are served (on a shared database: while the listener is connected)."""
        return self._trusted

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digest: str) -> V | None:
        """The cached entry for `digest`, unless it is stale or the cache is not trusted now."""
        if not self._trusted:
            return None
        entry = self._entries.get(digest)
        if entry is None:
            return None
        stored_at, value = entry
        if time.monotonic() - stored_at > self._ttl:
            self._entries.pop(digest, None)
            return None
        return value

    def put(self, digest: str, value: V) -> None:
        """Remember `value` (only while the cache is trusted)."""
        if self._trusted and self._ttl > 0:
            self._entries[digest] = (time.monotonic(), value)

    def forget(self, digest: str) -> None:
        """Evict one key (it was deactivated here or elsewhere)."""
        self._entries.pop(digest, None)

    def listening(self, trusted: bool) -> None:
        """The invalidation listener connected (True) or lost its connection (False); either way
        what was cached may have missed an invalidation, so it is dropped."""
        self._entries.clear()
        self._trusted = trusted
