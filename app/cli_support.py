"""Shared pieces of the `cit` command: settings, the migration check, sessions, failing clearly."""

from __future__ import annotations

import typer
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from app import migrate
from app.config import Settings, get_settings
from app.db import create_db_engine, make_sessionmaker


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def load_settings() -> Settings:
    try:
        return get_settings()
    except ValidationError as exc:
        fail(f"configuration error: {exc.errors()[0]['msg']}")
        raise  # unreachable: fail() raises


def require_head(settings: Settings) -> None:
    message = migrate.pending_message(settings.database_url)
    if message:
        fail(message)


def session_factory(settings: Settings) -> sessionmaker[Session]:
    return make_sessionmaker(create_db_engine(settings.database_url))


def ready(settings: Settings | None = None) -> tuple[Settings, sessionmaker[Session]]:
    """Settings and a session factory for a database at the current migration."""
    settings = settings or load_settings()
    require_head(settings)
    return settings, session_factory(settings)
