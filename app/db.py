"""Database engine and sessions: one place that commits, SQLite tuned for concurrent writers."""

from __future__ import annotations

import functools
import itertools
import sqlite3
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import anyio
import orjson
import sqlalchemy.exc
from fastapi import Depends, Request
from psycopg.pq import Format
from sqlalchemy import (
    Connection,
    Engine,
    Insert,
    Table,
    bindparam,
    create_engine,
    event,
    insert,
    select,
    union_all,
)
from sqlalchemy.dialects.sqlite.base import SQLiteCompiler
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.attributes import set_committed_value
from starlette.concurrency import run_in_threadpool

from app.errors import RETRY_AFTER_SECONDS, ServiceUnavailable
from app.observability import DB_SESSION_REFUSALS, DB_SESSIONS_IN_USE, DB_SESSIONS_WAITING

SQLITE_BUSY_TIMEOUT_MS = 15_000
# An execution option: PostgreSQL sends the statement's rows in its binary format (a bytea as
# its bytes instead of hex text; the export's lines, `app.exports.lines`). Only for statements
# whose columns need no SQLAlchemy result processing (plain numbers, text, bytea).
BINARY_ROWS = "cit_binary_rows"
T = TypeVar("T")
BINARY = Format.BINARY


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


# orjson for JSON columns: the worker writes a JSON document per story, and the standard
# library's encoder was a measurable share of the batch time.
JSON_OPTIONS: dict[str, Any] = {"json_serializer": _json_dumps, "json_deserializer": orjson.loads}


def create_db_engine(
    url: str,
    *,
    pool_size: int = 5,
    pool_timeout: float = 30,
    lock_timeout_seconds: float | None = None,
    statement_timeout_seconds: float | None = None,
    **kwargs: Any,
) -> Engine:
    """Create the engine; SQLite gets WAL, foreign keys, a busy timeout and explicit BEGINs.

    `pool_size` connections and no overflow: the API sizes it above the number of requests it
    lets use the database at once (DbGate), so no request waits for a connection while it holds
    a worker thread. The timeouts bound how long a statement may wait (PostgreSQL `lock_timeout`
    and `statement_timeout`; SQLite's busy timeout is the lock timeout)."""
    parsed = make_url(url)
    # hide_parameters: an error's message never carries a statement's values (story text)
    # into a log line.
    kwargs = {**JSON_OPTIONS, "hide_parameters": True, **kwargs}
    if parsed.get_backend_name() != "sqlite":
        options = []
        if lock_timeout_seconds is not None:
            options.append(f"-c lock_timeout={int(lock_timeout_seconds * 1000)}")
        if statement_timeout_seconds is not None:
            options.append(f"-c statement_timeout={int(statement_timeout_seconds * 1000)}")
        connect_args: dict[str, Any] = {"connect_timeout": 5}
        if options:
            connect_args["options"] = " ".join(options)
        # No pre-ping (a round trip per checkout, as much as a story's INSERT): a connection
        # that died with a server restart fails its first statement, which is a 503, and
        # SQLAlchemy then replaces every pooled connection older than the failure.
        engine = create_engine(
            url,
            pool_size=pool_size,
            max_overflow=0,
            pool_timeout=pool_timeout,
            connect_args=connect_args,
            **kwargs,
        )

        @event.listens_for(engine, "before_cursor_execute")
        def _binary_rows(
            _conn: Any, cursor: Any, _sql: Any, _params: Any, context: Any, _many: bool
        ) -> None:
            if context is not None and context.execution_options.get(BINARY_ROWS):
                cursor.format = BINARY

        return engine

    database = parsed.database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    busy_ms = int((lock_timeout_seconds or SQLITE_BUSY_TIMEOUT_MS / 1000) * 1000)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": busy_ms / 1000},
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=pool_timeout,
        **kwargs,
    )

    engine.dialect.statement_compiler = _SQLiteCompiler

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from pysqlite so that BEGIN is emitted by us (below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    # Writers of this process queue on a lock of this process before BEGIN IMMEDIATE. SQLite's
    # own busy handler polls with sleeps of up to 100 ms, so under contention the write lock sat
    # free while every waiter slept; a thread lock hands it over at once. Other processes still
    # meet at SQLite's lock, waited for in short steps (`_begin_immediate`). The lock is held
    # from BEGIN IMMEDIATE until the connection goes back to the pool (after its COMMIT or
    # ROLLBACK), or is invalidated.
    writer = threading.Lock()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A writing transaction takes the write lock up front (BEGIN IMMEDIATE): a deferred one
        # that reads first and writes later fails with SQLITE_BUSY instead of waiting its turn.
        writing = connection.get_execution_options().get("cit_write", False)
        if not writing:
            connection.exec_driver_sql("BEGIN")
            return
        info = connection.info
        if not info.get("cit_writer"):
            if not writer.acquire(timeout=busy_ms / 1000):
                raise sqlalchemy.exc.OperationalError(
                    "BEGIN IMMEDIATE", None, TimeoutError("waited too long for the write lock")
                )
            info["cit_writer"] = True
        _begin_immediate(connection, busy_ms / 1000)

    def _release(_dbapi_connection: Any, record: Any, *_args: Any) -> None:
        if record is not None and record.info.pop("cit_writer", False):
            writer.release()

    event.listen(engine, "checkin", _release)
    event.listen(engine, "invalidate", _release)
    event.listen(engine, "soft_invalidate", _release)

    return engine


# Another process's write transaction (the job worker's, another API process's) is waited for
# in steps of at most 2 ms: SQLite's own busy handler sleeps up to 100 ms a step, so the write
# lock sat free for tens of milliseconds after the other process had committed.
_BUSY_STEPS = (0.0005, 0.001, 0.002)


def _begin_immediate(connection: Any, timeout: float) -> None:
    driver = connection.connection.driver_connection
    driver.execute("PRAGMA busy_timeout=0")
    try:
        deadline = time.monotonic() + timeout
        for attempt in itertools.count():
            try:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
                return
            except sqlalchemy.exc.OperationalError as error:
                code = getattr(error.orig, "sqlite_errorcode", None)
                if code is None or code & 0xFF != sqlite3.SQLITE_BUSY:
                    raise
                if time.monotonic() >= deadline:
                    raise
            time.sleep(_BUSY_STEPS[min(attempt, len(_BUSY_STEPS) - 1)])
    finally:
        driver.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")


class _SQLiteCompiler(SQLiteCompiler):
    """SQLite's compiler, rendering `with_hint(table, "INDEXED BY ix", "sqlite")` after the
    table name (SQLAlchemy drops FROM hints on SQLite). The review queue needs it: SQLite's
    planner prefers a status index and a sort over walking a partial index in order, 0.3 s
    against 1 ms at a million stories."""

    def get_from_hint_text(self, table: Any, text: str | None) -> str | None:
        return text


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=False)


_engines_with: weakref.WeakKeyDictionary[Engine, dict[tuple[tuple[str, Any], ...], Engine]] = (
    weakref.WeakKeyDictionary()
)


def engine_with(engine: Engine, **options: Any) -> Engine:
    """The same engine and pool with these execution options, made once per engine and
    options (`Engine.execution_options` copies the engine: not a thing to do per request)."""
    made = _engines_with.setdefault(engine, {})
    key = tuple(sorted(options.items()))
    marked = made.get(key)
    if marked is None:
        marked = made[key] = engine.execution_options(**options)
    return marked


def write_engine(engine: Engine) -> Engine:
    """The same engine and pool, marked so that its transactions begin as writers (SQLite)."""
    return engine_with(engine, cit_write=True)


def new_session(factory: sessionmaker[Session], *, write: bool) -> Session:
    """A session that takes no connection until its first statement (then begins as a writer
    when `write`), so that holding one costs nothing while a request waits."""
    if not write:
        return factory()
    bind = factory.kw["bind"]
    return factory(bind=write_engine(bind))


@contextmanager
def session_scope(factory: sessionmaker[Session], *, write: bool = True) -> Iterator[Session]:
    """A unit of work: commit on success, roll back on error. Services only flush."""
    session = new_session(factory, write=write)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


class DbGate:
    """How many requests of this process may use the database at once.

    Requests beyond it wait on the event loop (holding no worker thread and no connection) up to
    `queue_timeout` seconds, then get a 503 with Retry-After: saturation answers instead of
    hanging. The pool and the thread limiter are sized above `capacity` (see create_app), so an
    admitted request never waits for a connection or a thread while it holds a transaction."""

    def __init__(self, capacity: int, queue_timeout: float) -> None:
        self.capacity = capacity
        self.queue_timeout = queue_timeout
        self._semaphore: anyio.Semaphore | None = None
        self.waiting = 0

    @property
    def in_use(self) -> int:
        return self.capacity - self._semaphore.value if self._semaphore else 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._semaphore is None:  # created lazily: it belongs to the running event loop
            self._semaphore = anyio.Semaphore(self.capacity)
        self.waiting += 1
        DB_SESSIONS_WAITING.inc()
        try:
            with anyio.fail_after(self.queue_timeout):
                await self._semaphore.acquire()
        except TimeoutError:
            DB_SESSION_REFUSALS.inc()
            raise ServiceUnavailable(
                "the service is busy; please retry in a moment",
                retry_after=RETRY_AFTER_SECONDS,
            ) from None
        finally:
            self.waiting -= 1
            DB_SESSIONS_WAITING.dec()
        DB_SESSIONS_IN_USE.inc()
        try:
            yield
        finally:
            self._semaphore.release()
            DB_SESSIONS_IN_USE.dec()

    async def run(self, work: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run `work(*args, **kwargs)` in one worker-thread call once a slot is free."""
        async with self.slot():
            return await run_in_threadpool(work, *args, **kwargs)


_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def db_slot(request: Request) -> AsyncIterator[None]:
    gate: DbGate = request.app.state.db_gate
    async with gate.slot():
        yield


async def get_session(
    request: Request, _slot: Annotated[None, Depends(db_slot, scope="function")]
) -> AsyncIterator[Session]:
    # Opening a session costs no I/O (it takes its connection at its first statement), so it
    # happens on the event loop; only the commit (or rollback) goes to a worker thread: one
    # thread hop per request instead of two (a hop is a context switch on a loaded machine).
    factory: sessionmaker[Session] = request.app.state.sessionmaker
    session = new_session(factory, write=request.method not in _READ_METHODS)
    try:
        yield session
    except BaseException:
        await _end_in_thread(session, commit=False)
        raise
    await _end_in_thread(session, commit=True)


async def _end_in_thread(session: Session, *, commit: bool) -> None:
    # A limiter of its own (as FastAPI does for a dependency's exit): the commit that releases
    # a transaction's locks never waits for a token of the worker-thread pool, which requests
    # waiting on those locks may hold. Shielded: a cancelled request (client gone) still ends
    # its transaction and hands back its connection (and SQLite's write lock) at once.
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(
            functools.partial(end_session, session, commit=commit), limiter=anyio.CapacityLimiter(1)
        )


def written_by_core(session: Session, instance: Any, values: dict[str, Any]) -> None:
    """`values` of a loaded object were just written by a Core statement: they become its
    committed state, and it leaves the session, which would otherwise walk its unit of work
    at the next flush (and the commit's) to find nothing to write. Its attributes stay loaded."""
    for name, value in values.items():
        set_committed_value(instance, name, value)
    session.expunge(instance)


def end_session(session: Session, *, commit: bool) -> None:
    """session_scope's ending: commit (or roll back), then close."""
    try:
        if commit:
            try:
                session.commit()
            except BaseException:
                session.rollback()
                raise
        else:
            session.rollback()
    finally:
        session.close()


# scope="function": commit before the response is built, so a failed commit is an error
# response, never a success the database does not hold. The session takes its connection at
# its first statement, inside the endpoint's thread, and the commit runs on a thread of its own
# (not limited by the pool of worker threads), so a transaction never waits for a thread;
# `db_slot` keeps the number of open sessions below the pool size.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


@contextmanager
def brief_read(session: Session) -> Iterator[Session]:
    """A read that must not take SQLite's write lock (authentication, say).

    On SQLite it runs in a transaction of its own, ended at once: a deferred BEGIN that takes
    no write lock, so that a request refused here never queues for it, and the request's writes
    begin afresh. Elsewhere (PostgreSQL: row locks, no database-wide write lock) it is the
    request's own transaction: a transaction of its own cost a BEGIN and a ROLLBACK, two round
    trips, on every request (bench/review_throughput.py)."""
    if session.get_bind().dialect.name != "sqlite":
        yield session
        return
    session.connection(execution_options={"cit_write": False})
    try:
        yield session
    finally:
        session.rollback()


def insert_rows(table: Table, rows: list[dict[str, Any]]) -> Insert:
    """An INSERT of `rows` (all with the same keys) as one statement that SQLAlchemy can cache:
    `insert(table).values(rows)` of more than one row has no cache key, so it was compiled
    afresh on every call (on PostgreSQL, where WriteBatch sends it in a CTE, the coding's
    statement took 1.1 ms of CPU against 0.5 ms now: bench/README.md, Coding path). Several
    rows go as `INSERT .. SELECT <row 1> UNION ALL SELECT <row 2> ..`, each value a parameter
    of its column's type: one compiled form per table, keys and number of rows. As with a
    multi-row VALUES, a column left out gets its server default, so a Python-side default must
    be in the rows."""
    if not rows:
        raise ValueError(f"insert_rows({table.name}): no rows")
    keys = list(rows[0])
    missing = [c.name for c in table.columns if c.default is not None and c.name not in rows[0]]
    if missing:
        raise ValueError(f"insert_rows({table.name}): rows need {', '.join(missing)}")
    if len(rows) == 1:
        return insert(table).values(rows[0])
    columns = [table.c[key] for key in keys]
    selects = [
        select(*(bindparam(None, row[c.key], type_=c.type) for c in columns)) for row in rows
    ]
    return insert(table).from_select(keys, union_all(*selects), include_defaults=False)


class WriteBatch:
    """Writes that need nothing back, sent together: on PostgreSQL as one statement (all but
    the last as data-modifying CTEs: one round trip instead of one each), elsewhere one by one
    as they come (SQLite has no round trips to save, nor DML in CTEs).

    A write comes as a callable building it with its values in (CTEs take no executemany),
    and optionally as a statement built once with its parameters, which is what runs when the
    writes are not combined. Two writes to one table never share a statement (its parts run on
    one snapshot in no set order: a DELETE and an INSERT of one key would conflict), so the
    second sends those before it first; `flush` sends them before a read of what they wrote,
    and at the end. Nor do two tables whose triggers read each other (TRIGGER_LINKED): each
    trigger would see the other's write, which run one after the other neither does (the
    report rollups' triggers on incidents and incident_codes would count a final code twice)."""

    # Tables whose AFTER triggers read the other one (migrations 0004 and 0006).
    TRIGGER_LINKED = {"incidents": "incident_codes", "incident_codes": "incidents"}

    def __init__(self, connection: Connection, *, combine: bool | None = None) -> None:
        self.connection = connection
        self.combine = connection.dialect.name == "postgresql" if combine is None else combine
        self._pending: list[Any] = []
        self._tables: set[str] = set()

    def add(
        self,
        table: Table,
        build: Callable[[], Any],
        prebuilt: Any = None,
        params: Any = None,
    ) -> None:
        if not self.combine:
            if prebuilt is None:
                self.connection.execute(build())
            else:
                self.connection.execute(prebuilt, params)
            return
        if table.name in self._tables or self.TRIGGER_LINKED.get(table.name) in self._tables:
            self.flush()
        self._pending.append(build())
        self._tables.add(table.name)

    def flush(self) -> None:
        pending, self._pending, self._tables = self._pending, [], set()
        if not pending:
            return
        statement = pending[-1]
        if len(pending) > 1:
            statement = statement.add_cte(
                *(write.cte(f"write_{i}") for i, write in enumerate(pending[:-1]))
            )
        self.connection.execute(statement)
