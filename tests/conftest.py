"""Test harness: a real database migrated by Alembic (SQLite, or PostgreSQL when
CIT_TEST_DATABASE_URL is set), emptied after every test; httpx-based client on the ASGI app."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from app import migrate
from app.auth import create_token
from app.config import Settings
from app.db import create_db_engine, make_sessionmaker, session_scope
from app.main import create_app
from app.models import Base, Survey
from app.surveys import service as surveys
from app.surveys.schemas import SurveyCreate

TEST_SECRET = "test-secret-key-not-for-production"
# Apps made in this process do not freeze its objects (app.main.freeze_start_up_objects): every
# test's app would. Servers the tests start as processes of their own keep the default.
os.environ.setdefault("CIT_GC_FREEZE", "false")


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """A command run in-process (`cit serve`'s and the worker's `configure_logging`) routes the
    root logger to the stderr that the CLI runner captured, at INFO: put the root and uvicorn's
    loggers back as they were, so that no later test logs to a closed stream or reads another
    command's log lines in its output."""
    names = ("", "uvicorn", "uvicorn.error", "uvicorn.access")
    saved = [
        (logger, logger.handlers[:], logger.level, logger.propagate, logger.disabled)
        for logger in (logging.getLogger(name) for name in names)
    ]
    yield

    def pytests(handler: logging.Handler) -> bool:  # pytest's capture handlers come and go
        return type(handler).__module__.startswith("_pytest")

    for logger, handlers, level, propagate, disabled in saved:
        logger.handlers[:] = [h for h in handlers if not pytests(h)] + [
            h for h in logger.handlers if pytests(h)
        ]
        logger.setLevel(level)
        logger.propagate = propagate
        logger.disabled = disabled


def pytest_report_header() -> str:
    return f"database: {os.environ.get('CIT_TEST_DATABASE_URL') or 'SQLite (temporary file)'}"


def reset_postgres_schema(url: str) -> None:
    engine = create_db_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = os.environ.get("CIT_TEST_DATABASE_URL")
    if url:
        reset_postgres_schema(url)
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'cit-test.db'}"
    migrate.upgrade(url)
    return url


@pytest.fixture(scope="session")
def is_postgres(database_url: str) -> bool:
    return database_url.startswith("postgresql")


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_db_engine(database_url)
    yield engine
    engine.dispose()


def _empty_tables(engine: Engine) -> None:
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for name in tables:
                conn.execute(text(f"DELETE FROM {name}"))


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        env="test",
        database_url=database_url,
        secret_key=TEST_SECRET,
        data_dir=tmp_path / "data",
        public_base_url="http://testserver",
        submit_rate_limit=1000,
        # The webhook tests' receivers listen on loopback; tests/webhooks/test_addresses.py
        # checks the default (public addresses only).
        webhook_allow_private_addresses=True,
        gc_freeze=False,
    )


@pytest.fixture
def app(settings: Settings, engine: Engine) -> Iterator[FastAPI]:
    application = create_app(settings)
    yield application
    application.state.engine.dispose()
    _empty_tables(engine)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, base_url="http://testserver") as test_client:
        yield test_client


@pytest.fixture
def db(app: FastAPI) -> Callable[[], Any]:
    """`with db() as session:` a committed unit of work on the test database."""
    return lambda: session_scope(app.state.sessionmaker)


@pytest.fixture
def token_for(db: Callable[[], Any]) -> Callable[..., dict[str, str]]:
    """Factory: auth headers for a new person with the given role."""
    counter = iter(range(1, 1_000_000))

    def make(role: str = "admin", name: str | None = None) -> dict[str, str]:
        with db() as session:
            _, token = create_token(session, name=name or f"{role}-{next(counter)}", role=role)
        return {"Authorization": f"Bearer {token}"}

    return make


@pytest.fixture
def admin(token_for: Callable[..., dict[str, str]]) -> dict[str, str]:
    return token_for("admin")


@pytest.fixture
def make_survey(db: Callable[[], Any], settings: Settings) -> Callable[..., Survey]:
    """Factory: a survey (open by default) created through the service layer."""

    def make(**fields: Any) -> Survey:
        data = {
            "title": "Test survey",
            "open": True,
            "touchpoints": ["Check-in", "On board"],
            "channels": ["In person", "Phone"],
            **fields,
        }
        with db() as session:
            survey = surveys.create_survey(session, SurveyCreate.model_validate(data), None)
            session.expunge(survey)
        return survey

    return make


def session_for(app: FastAPI) -> Session:
    return make_sessionmaker(app.state.engine)()
