"""Fixed-window counters in the database, so every replica counts against the same limit."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import case
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.db.models import RateLimit, utcnow


class RateLimitRepository:
    """`hit` counts one event in a bucket's current window and says how many there were."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def hit(self, bucket: str, window: timedelta) -> int:
        """Count one event; return the count in the current window (one atomic upsert)."""
        now = utcnow()
        async with self._sessions.begin() as session:
            dialect = session.get_bind().dialect.name
            insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
            statement = insert(RateLimit).values(bucket=bucket, window_start=now, count=1)
            expired = RateLimit.window_start < now - window
            upsert = statement.on_conflict_do_update(
                index_elements=[RateLimit.bucket],
                set_={
                    "count": case((expired, 1), else_=RateLimit.count + 1),
                    "window_start": case((expired, now), else_=RateLimit.window_start),
                },
            ).returning(RateLimit.count)
            return int((await session.execute(upsert)).scalar_one())
