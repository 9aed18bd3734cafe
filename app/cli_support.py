"""Shared pieces of the `cit` command: settings, the migration check, sessions, failing clearly."""

from __future__ import annotations

import logging
import time

import typer
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError
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


def unreachable(exc: OperationalError) -> str:
    """Why the database could not be reached: the first line of the driver's message (host,
    port and reason; the URL and its password are not in it)."""
    lines = str(exc.orig if exc.orig is not None else exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__


def _check_head(settings: Settings) -> OperationalError | None:
    """Fails at once when the database is behind the migrations; the error when it cannot be
    reached; None when it is at the head."""
    try:
        message = migrate.pending_message(settings.database_url)
    except OperationalError as exc:
        return exc
    if message:
        fail(message)
    return None


def require_head(settings: Settings) -> None:
    if (exc := _check_head(settings)) is not None:
        fail(f"cannot reach the database: {unreachable(exc)}")


WAIT_MAX_SECONDS = 30.0


def wait_for_head(settings: Settings, log: logging.Logger) -> None:
    """`require_head`, but while the database cannot be reached it logs why and tries again
    (after 1 s, then twice as long each time, up to WAIT_MAX_SECONDS): a worker started during an
    outage, or before its database, waits for it instead of exiting. A database behind the
    migrations still fails at once."""
    pause = 1.0
    while (exc := _check_head(settings)) is not None:
        log.warning(
            "cannot reach the database (%s); trying again in %.0f s", unreachable(exc), pause
        )
        time.sleep(pause)
        pause = min(pause * 2, WAIT_MAX_SECONDS)


def session_factory(settings: Settings) -> sessionmaker[Session]:
    return make_sessionmaker(create_db_engine(settings.database_url))


def ready(settings: Settings | None = None) -> tuple[Settings, sessionmaker[Session]]:
    """Settings and a session factory for a database at the current migration."""
    settings = settings or load_settings()
    require_head(settings)
    return settings, session_factory(settings)
