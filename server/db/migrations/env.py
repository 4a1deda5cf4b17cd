"""Alembic environment: migrations run on a sync engine, one at a time across replicas."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool, text

from server.db.models import Base

# Any constant: replicas starting together on one PostgreSQL take turns migrating.
MIGRATION_LOCK_ID = 0x63636170


def run_migrations_online() -> None:
    config = context.config
    engine = create_engine(config.attributes["sync_url"], poolclass=pool.NullPool)
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
            connection.commit()
        try:
            context.configure(
                connection=connection,
                target_metadata=Base.metadata,
                render_as_batch=connection.dialect.name == "sqlite",
                compare_type=True,
            )
            with context.begin_transaction():
                context.run_migrations()
        finally:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})
                connection.commit()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; run them against a database")
run_migrations_online()
