"""Database URLs: one setting, two drivers (async for the server, sync for Alembic)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from server.domain.errors import ConfigurationError

_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+psycopg"}
_SYNC_DRIVERS = {"sqlite": "sqlite", "postgresql": "postgresql+psycopg"}


@dataclass(frozen=True)
class DatabaseUrls:
    """The configured database, as an async URL for the server and a sync URL for migrations."""

    backend: str
    async_url: URL
    sync_url: URL

    def render_sync(self) -> str:
        """The sync URL with its password, for Alembic's engine only."""
        return self.sync_url.render_as_string(hide_password=False)


def resolve(database_url: str, default_sqlite_path: Path) -> DatabaseUrls:
    """Turn `DATABASE_URL` (or its absence) into driver-specific URLs."""
    if not database_url:
        default_sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        database_url = f"sqlite:///{default_sqlite_path}"
    try:
        url = make_url(database_url)
    except Exception:
        raise ConfigurationError("DATABASE_URL is not a valid SQLAlchemy URL") from None
    backend = url.get_backend_name()
    if backend not in _ASYNC_DRIVERS:
        raise ConfigurationError("DATABASE_URL must be a sqlite:// or postgresql+psycopg:// URL")
    if backend == "postgresql" and url.get_driver_name() not in {"psycopg", "psycopg_async"}:
        raise ConfigurationError("PostgreSQL is reached through psycopg 3: use postgresql+psycopg://")
    return DatabaseUrls(
        backend=backend,
        async_url=url.set(drivername=_ASYNC_DRIVERS[backend]),
        sync_url=url.set(drivername=_SYNC_DRIVERS[backend]),
    )


def libpq_url(urls: DatabaseUrls) -> str:
    """The database as a libpq URL (what psycopg connects to directly)."""
    return urls.sync_url.set(drivername="postgresql").render_as_string(hide_password=False)
