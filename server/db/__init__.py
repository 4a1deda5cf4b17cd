"""Storage: SQLAlchemy models, Alembic migrations and the repositories domain code calls."""
