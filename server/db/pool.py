"""A plain psycopg connection pool for the hot path's statements on PostgreSQL."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from server.db.urls import DatabaseUrls, libpq_url

#: How long a request waits for a connection before the database counts as unavailable (503).
CHECKOUT_TIMEOUT_SECONDS = 5.0
#: How long one connection attempt may take (a dead server must not hang requests).
CONNECT_TIMEOUT_SECONDS = 3


async def open_pool(urls: DatabaseUrls, max_size: int) -> AsyncConnectionPool:
    """A started pool of autocommit connections. It does not ping before each use: a connection that
    broke fails its statement (503) and the pool drops it when it comes back, then reconnects."""
    pool = AsyncConnectionPool(
        libpq_url(urls),
        min_size=min(2, max_size),
        max_size=max_size,
        timeout=CHECKOUT_TIMEOUT_SECONDS,
        kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_SECONDS},
        name="hot-path",
        open=False,
    )
    await pool.open(wait=False)
    return pool
