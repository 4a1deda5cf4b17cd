"""The async engine and session factory the server shares."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from server.db.urls import DatabaseUrls

SQLITE_BUSY_TIMEOUT_SECONDS = 30


def create_engine(urls: DatabaseUrls) -> AsyncEngine:
    """An async engine for the configured backend, tuned for it."""
    if urls.backend == "sqlite":
        engine = create_async_engine(
            urls.async_url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}, pool_pre_ping=False
        )
        event.listen(engine.sync_engine, "connect", _configure_sqlite)
        return engine
    return create_async_engine(
        urls.async_url,
        pool_size=10,
        max_overflow=20,
        pool_pre_ping=True,
        pool_timeout=5,
        # A dead server must not hang a request: give up connecting after a few seconds.
        connect_args={"connect_timeout": 3},
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded values after commit (responses are built after it)."""
    return async_sessionmaker(engine, expire_on_commit=False)


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers work while one writer commits; foreign keys are off by default in SQLite.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
