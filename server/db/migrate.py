"""Run Alembic migrations programmatically: at server start, and from the command line.

python -m server.db.migrate upgrade            # to the newest revision
python -m server.db.migrate revision -m "why"  # autogenerate a new revision from the models
"""

from __future__ import annotations

import argparse
from pathlib import Path

from alembic import command
from alembic.config import Config

from server.db.urls import DatabaseUrls, resolve
from server.settings import Settings

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(urls: DatabaseUrls) -> Config:
    """An Alembic configuration for `urls`, with no ini file."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["sync_url"] = urls.render_sync()
    config.attributes["backend"] = urls.backend
    return config


def upgrade(urls: DatabaseUrls, revision: str = "head") -> None:
    """Bring the database to `revision`. Safe to run from several replicas at once on PostgreSQL."""
    command.upgrade(alembic_config(urls), revision)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("upgrade", help="migrate to the newest revision")
    new = sub.add_parser("revision", help="autogenerate a revision from the models")
    new.add_argument("-m", "--message", required=True)
    args = parser.parse_args()
    settings = Settings.from_env()
    urls = resolve(settings.database_url, settings.sqlite_default_path)
    if args.command == "upgrade":
        upgrade(urls)
    else:
        command.revision(alembic_config(urls), message=args.message, autogenerate=True)


if __name__ == "__main__":
    main()
