"""Database engine and sessions: one place that commits, SQLite tuned for concurrent writers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import Depends, Request
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 15_000


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


# orjson for JSON columns: the worker writes a JSON document per story, and the standard
# library's encoder was a measurable share of the batch time.
JSON_OPTIONS: dict[str, Any] = {"json_serializer": _json_dumps, "json_deserializer": orjson.loads}


def create_db_engine(url: str, **kwargs: Any) -> Engine:
    """Create the engine; SQLite gets WAL, foreign keys, a busy timeout and explicit BEGINs."""
    parsed = make_url(url)
    kwargs = {**JSON_OPTIONS, **kwargs}
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, **kwargs)

    database = parsed.database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        **kwargs,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from pysqlite so that BEGIN is emitted by us (below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A writing transaction takes the write lock up front (BEGIN IMMEDIATE): a deferred one
        # that reads first and writes later fails with SQLITE_BUSY instead of waiting its turn.
        writing = connection.get_execution_options().get("cit_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writing else "BEGIN")

    return engine


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=False)


@contextmanager
def session_scope(factory: sessionmaker[Session], *, write: bool = True) -> Iterator[Session]:
    """A unit of work: commit on success, roll back on error. Services only flush."""
    session = factory()
    if write:
        session.connection(execution_options={"cit_write": True})
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_session(request: Request) -> Iterator[Session]:
    factory: sessionmaker[Session] = request.app.state.sessionmaker
    with session_scope(factory, write=request.method not in _READ_METHODS) as session:
        yield session


# scope="function": commit before the response is built, so a failed commit is an error
# response, never a success the database does not hold.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
