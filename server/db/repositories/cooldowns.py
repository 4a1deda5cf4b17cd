"""Model cool-downs in the database, so a 429 seen by one replica rests the model for all of them.

Routing reads the resting set on every request, so each process keeps it for a second: a model put to
rest elsewhere is skipped here at most that much later (cool-downs last 15 to 60 s), and one put to
rest here is skipped at once. Cool-downs steer routing; no balance or quota depends on them.
"""

from __future__ import annotations

import time
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.db.models import ModelCooldown, utcnow


class CooldownRepository:
    """Which models are resting now, and putting one to rest."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], cache_seconds: float = 1.0) -> None:
        self._sessions = sessions
        self._cache_seconds = cache_seconds
        self._cached: tuple[float, frozenset[str]] | None = None

    async def resting(self) -> frozenset[str]:
        """The models resting now (as of at most `cache_seconds` ago)."""
        now = time.monotonic()
        if self._cached is not None and now - self._cached[0] < self._cache_seconds:
            return self._cached[1]
        async with self._sessions() as session:
            rows = await session.scalars(select(ModelCooldown.model_id).where(ModelCooldown.until > utcnow()))
            resting = frozenset(rows)
        self._cached = (now, resting)
        return resting

    async def rest(self, model_id: str, duration: timedelta, reason: str) -> None:
        until = utcnow() + duration
        async with self._sessions.begin() as session:
            insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
            statement = insert(ModelCooldown).values(model_id=model_id, until=until, reason=reason)
            await session.execute(
                statement.on_conflict_do_update(
                    index_elements=[ModelCooldown.model_id], set_={"until": until, "reason": reason}
                )
            )
        self._cached = None
