"""Test databases: a SQLite file, or a fresh PostgreSQL database made for this run and dropped after."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from psycopg import sql

ADMIN_URL = os.environ.get("CROSSCOMPUTE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
#: `required` in CI: an unreachable PostgreSQL fails the run instead of skipping its tests.
POSTGRES_POLICY = os.environ.get("CROSSCOMPUTE_TEST_POSTGRES", "optional")


def _admin_connection() -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3)


def require_postgres() -> None:
    """Skip (or, in CI, fail) when PostgreSQL cannot be reached."""
    try:
        with _admin_connection() as connection:
            connection.execute("SELECT 1")
    except psycopg.OperationalError as error:
        message = f"PostgreSQL unreachable at {ADMIN_URL.split('@')[-1]}: {error}"
        if POSTGRES_POLICY == "required":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


def sqlalchemy_url(database: str) -> str:
    """A `postgresql+psycopg://` URL for `database` on the test server."""
    base = ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{database}"


@contextmanager
def postgres_database(purpose: str) -> Iterator[tuple[str, str]]:
    """Create a fresh database; yield (name, SQLAlchemy URL); drop it afterwards."""
    require_postgres()
    name = f"cc_test_{purpose}_{uuid.uuid4().hex[:10]}"
    with _admin_connection() as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name, sqlalchemy_url(name)
    finally:
        with _admin_connection() as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def set_connections_allowed(name: str, allowed: bool) -> None:
    """Open or close a database to new connections; closing also ends the open ones."""
    with _admin_connection() as connection:
        connection.execute(
            sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
                sql.Identifier(name), sql.Literal(allowed)
            )
        )
        if not allowed:
            connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
            )
