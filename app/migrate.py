"""Applying and checking Alembic migrations from code (CLI, tests, `cit serve`'s start check)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from app.config import Settings
from app.db import create_db_engine

ROOT = Path(__file__).resolve().parent.parent


def alembic_config(database_url: str, settings: Settings | None = None) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["configure_logging"] = False
    # The settings a migration that encrypts or decrypts reads its keys from (default: the
    # environment's, get_settings()).
    config.attributes["settings"] = settings
    return config


def upgrade(database_url: str, revision: str = "head", settings: Settings | None = None) -> None:
    command.upgrade(alembic_config(database_url, settings), revision)


def downgrade(database_url: str, revision: str, settings: Settings | None = None) -> None:
    command.downgrade(alembic_config(database_url, settings), revision)


def head_revision(database_url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()


def current_revision(database_url: str) -> str | None:
    engine = create_db_engine(database_url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def pending_message(database_url: str) -> str | None:
    """None when the database is at head; otherwise what is wrong and the command that fixes it."""
    current, head = current_revision(database_url), head_revision(database_url)
    if current == head:
        return None
    return (
        f"the database is at revision {current or 'none (empty)'}, but this version of the "
        f"service needs {head}: run `cit db upgrade` first"
    )
