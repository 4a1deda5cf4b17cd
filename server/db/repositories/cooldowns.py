"""Model cool-downs in the database, so a 429 seen by one replica rests the model for all of them."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.db.models import ModelCooldown, utcnow


class CooldownRepository:
    """Which models are resting now, and putting one to rest."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def resting(self) -> set[str]:
        async with self._sessions() as session:
            rows = await session.scalars(select(ModelCooldown.model_id).where(ModelCooldown.until > utcnow()))
            return set(rows)

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
