"""Reading a gateway's database directly, as an attacker with a copy of it would."""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine, text

from server.db.urls import resolve
from server.settings import DEFAULT_SQLITE_PATH, Settings


def query(settings: Settings, sql: str, **params: Any) -> list[dict[str, Any]]:
    """Rows of `sql` against the gateway's database, as dictionaries."""
    engine = create_engine(resolve(settings.database_url, DEFAULT_SQLITE_PATH).render_sync())
    try:
        with engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(text(sql), params)]
    finally:
        engine.dispose()


def execute(settings: Settings, statements: list[tuple[str, dict[str, Any]]]) -> None:
    """Run `statements` in one transaction against the gateway's database."""
    engine = create_engine(resolve(settings.database_url, DEFAULT_SQLITE_PATH).render_sync())
    try:
        with engine.begin() as connection:
            for sql, params in statements:
                connection.execute(text(sql), params)
    finally:
        engine.dispose()
