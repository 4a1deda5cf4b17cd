"""The database health probe."""

from __future__ import annotations

import time

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker


class DatabaseProbe:
    """Answers whether the database can be reached, and how fast."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def ping(self) -> float:
        """Run a trivial query; return its latency in milliseconds. Raises when the database is down."""
        started = time.perf_counter()
        async with self._sessions() as session:
            await session.execute(text("SELECT 1"))
        return (time.perf_counter() - started) * 1000
