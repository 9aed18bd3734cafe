"""A zip's side tables made by a second process, beside the stories member.

The zip's members are written one after the other, and each is Python per story (~13 µs a
stories line, ~14 µs a story's four suggestion lines): threads cannot share that (the GIL), so
a large export makes its suggestions table (on SQLite its codings table first) in a process of
its own (`SideTables`), on a connection of its own that reads the export's snapshot, while the
export's process writes the stories member. The child writes the tables' chunks (exactly those
`stream.table_chunks` yields, so that the members' deflated bytes are the sequential path's)
into a temporary file, framed by their length, one table after the other in the zip's order;
the export deflates them into the zip when it comes to each member (ISA-L's deflate lets go of
the GIL), reading as the child writes.

The same snapshot:
- PostgreSQL: the export's REPEATABLE READ transaction exports its snapshot
  (`pg_export_snapshot`), the child's REPEATABLE READ transaction imports it
  (`SET TRANSACTION SNAPSHOT`), as the JSONL readers' threads do.
- SQLite (WAL): a read transaction's snapshot is fixed by its first read, so both first reads
  happen while a third connection holds the write lock (BEGIN IMMEDIATE): no write can commit
  between them. The lock is held for a round trip to the (started, connected) child only.

The child is a new Python started by `subprocess` (`_ENTRY`, two inherited pipes for its
messages): it inherits neither the server's engine and its pooled connections nor its threads
(fork would copy both into the child), and, unlike multiprocessing's spawn or forkserver, it
does not run the parent's `__main__` module again; it makes its own engine from the URL. It
ends with the export: on an error, on a client gone (the generator closed), and it stops by
itself if the export's process dies. The temporary file is unlinked as soon as the child has
opened it, so nothing is left behind even then. A child that fails, or dies, before its
table's end fails the export loudly (`SideTableFailed`): a member is never silently short."""

from __future__ import annotations

import contextlib
import os
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from app.db import create_db_engine, make_sessionmaker, session_scope, write_engine
from app.exports.service import ExportSpec
from app.incidents.service import filter_conditions
from app.models import Incident

# From how many exported stories a zip makes its side tables in a second process: a new
# interpreter takes ~0.9-1.1 s to start (its imports: SQLAlchemy, FastAPI and the models through
# app.exports; spaCy no longer), which SQLite's export waits for, against ~14 µs a story saved
# (bench/README.md, Exports at scale, ninth and tenth sessions); below this the zip is written
# as before.
PARALLEL_FROM = 200_000
# The tables the second process makes, in the zip's member order, by database. SQLite: the
# codings too, so that both processes finish together (the export's stories member is ~14 s of
# SQLite a million stories, the child's suggestions ~11 s of Python); PostgreSQL: the
# suggestions alone, since there the server's backends take the cores as well and a child with
# the codings too finished last (bench/README.md, tenth session).
SIDE_TABLES: dict[str, tuple[str, ...]] = {
    "sqlite": ("codings", "suggestions"),
    "postgresql": ("suggestions",),
}
TEMP_PREFIX = "cit-export-side-"
_FRAME = struct.Struct(">Q")
_END = 2**64 - 1  # a frame length that marks the end of a table
_WAIT = 60.0  # seconds the export waits for the child's start or its snapshot
_POLL = 0.005  # seconds between looks at a file the child is still writing

# Tests: called (with the export's session) between the export's first read and the child's.
_between_first_reads: Callable[[Session], None] | None = None


class SideTableFailed(RuntimeError):
    """The process that makes a side table failed or died before its table's end."""


def large(factory: Any, spec: ExportSpec, threshold: int) -> bool:
    """Whether the export holds at least `threshold` stories (counted up to it: an index
    range of at most `threshold` ids, in a short transaction of its own)."""
    if threshold <= 0:
        return True
    with session_scope(factory, write=False) as session:
        ids = (
            select(Incident.id)
            .where(*filter_conditions(spec.filters, spec.view, spec.viewer))
            .limit(threshold)
            .subquery()
        )
        return int(session.scalar(select(func.count()).select_from(ids)) or 0) >= threshold


def side_tables(engine: Engine) -> tuple[str, ...]:
    """The tables this database's exports make in the second process (`SIDE_TABLES`)."""
    return SIDE_TABLES.get(engine.dialect.name, ("suggestions",))


def possible(engine: Engine) -> bool:
    """A second process can open the same database (not an in-memory SQLite one)."""
    url = engine.url
    return url.get_backend_name() != "sqlite" or url.database not in (None, "", ":memory:")


class SideTables:
    """The child process that makes `tables`, and the file it writes them to."""

    def __init__(self, engine: Engine, spec: ExportSpec, tables: tuple[str, ...]) -> None:
        self.engine = engine
        self.tables = tables
        self.pg = engine.dialect.name == "postgresql"
        self._message: str | None = None
        self._gone = False
        self._offset = 0
        self._tables_read = 0
        handle, self.path = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".frames")
        self._fd: int | None = handle
        self.process: subprocess.Popen[bytes] | None = None
        from_parent, to_child = os.pipe()
        from_child, to_parent = os.pipe()
        self._out = Connection(to_child, readable=False)
        self._in = Connection(from_child, writable=False)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _ENTRY, str(from_parent), str(to_parent)],
                pass_fds=(from_parent, to_parent),
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": _python_path()},
            )
            self._out.send((_child_url(engine), spec, tables, self.path, os.getpid()))
        except BaseException:
            self.close()
            raise
        finally:
            os.close(from_parent)
            os.close(to_parent)

    def share(self, session: Session) -> None:
        """Begin the export's snapshot (`session`: its first read) and hand it to the child."""
        if self.pg:
            connection = session.connection()
            snapshot = connection.exec_driver_sql("SELECT pg_export_snapshot()").scalar_one()
            timeouts = connection.exec_driver_sql(
                "SELECT current_setting('statement_timeout'), current_setting('lock_timeout')"
            ).one()
            if _between_first_reads is not None:
                _between_first_reads(session)
            # The export's transaction stays open until the child's tables are read, so the
            # child imports the snapshot whenever it has started (the export goes on at once);
            # a failure to do so comes with its table.
            self._out.send(("go", snapshot, tuple(timeouts)))
            return
        self._receive("opened")
        # A third connection holds the write lock while both transactions take their first
        # read: no write commits between them, so they read the same snapshot.
        with write_engine(self.engine).connect() as locked:
            locked.begin()
            session.connection().exec_driver_sql("SELECT 1 FROM incidents LIMIT 1").all()
            if _between_first_reads is not None:
                _between_first_reads(session)
            self._out.send(("go", None, None))
            self._receive("ready")
            locked.rollback()

    def chunks(self, table: str) -> Iterator[bytes]:
        """The table's chunks as the child wrote them (asked for in `tables`' order, the
        order the child writes them in)."""
        if self._tables_read >= len(self.tables) or table != self.tables[self._tables_read]:
            raise ValueError(f"{table!r} is not the side tables' next one {self.tables}")
        self._tables_read += 1
        self._messages()  # "opened" (PostgreSQL: not waited for), or an error
        while (length := _FRAME.unpack(self._read(_FRAME.size))[0]) != _END:
            yield self._read(length)

    def close(self) -> None:
        """Stop the child (if it still runs), close and remove the file."""
        process = self.process
        if process is not None:
            # Killed outright: it holds nothing to clean up (its read transaction ends with its
            # connection, the file is unlinked here), and a stopped process ignores SIGTERM.
            if process.poll() is None:
                process.kill()
            process.wait()
        self._out.close()
        self._in.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._unlink()

    def _unlink(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def _failed(self, what: str) -> SideTableFailed:
        if self._message is None and not self._gone and self._in.poll():
            self._take()
        detail = f": {self._message}" if self._message else ""
        code = self.process.poll() if self.process is not None else None
        return SideTableFailed(
            f"the export's side tables process {what} (exit code {code}){detail}"
        )

    def _take(self) -> str:
        """The child's next message; "opened" (the file is open on its side) unlinks it."""
        try:
            message = self._in.recv()
        except EOFError:  # the child has ended (and said everything it had to say)
            self._gone = True
            return "gone"
        if message[0] == "opened":
            self._unlink()
        elif message[0] == "error":
            self._message = message[1]
        return str(message[0])

    def _messages(self) -> None:
        """The child's messages so far (without waiting); its error raises."""
        while not self._gone and self._in.poll():
            if self._take() == "error":
                raise self._failed("failed")

    def _receive(self, expected: str) -> None:
        """Wait for the child's `expected` message; its error, its end or a timeout raise."""
        # The child's end closes its side of the pipe: `poll` then answers, `_take` says "gone".
        if self._in.poll(_WAIT):
            if self._take() == expected:
                return
            if self.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(1)
            raise self._failed("failed")
        raise self._failed(f"did not answer in {_WAIT:.0f} s")

    def _read(self, size: int) -> bytes:
        """`size` bytes from the file at the reading offset, waiting while the child writes."""
        assert self._fd is not None
        parts: list[bytes] = []
        missing = size
        while missing:
            data = os.pread(self._fd, missing, self._offset)
            if data:
                parts.append(data)
                self._offset += len(data)
                missing -= len(data)
                continue
            self._messages()
            if self.process is None or self.process.poll() is not None:
                # It may have written its last bytes just before it ended: one more look.
                if os.pread(self._fd, 1, self._offset):
                    continue
                raise self._failed("ended before its table's end")
            time.sleep(_POLL)
        return parts[0] if len(parts) == 1 else b"".join(parts)


def _child_url(engine: Engine) -> str:
    """The URL the child makes its engine from (the export's database)."""
    return engine.url.render_as_string(hide_password=False)


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _python_path() -> str:
    """The child imports `app` from where this process did (and whatever else it could)."""
    root = str(Path(__file__).resolve().parents[2])
    return os.pathsep.join(dict.fromkeys([root, *(p for p in sys.path if p)]))


# The child's entry: not `python -m app.exports.side` (it would import this module twice), and
# not multiprocessing's spawn or forkserver (both run the parent's __main__ module again in the
# child: a script that exports without an `if __name__ == "__main__"` guard would start the
# export again there).
_ENTRY = "import sys; from app.exports.side import _main; _main(int(sys.argv[1]), int(sys.argv[2]))"


def _main(from_parent: int, to_parent: int) -> None:
    """The child process: its work from the pipe, its messages back on the other."""
    inbox = Connection(from_parent, writable=False)
    outbox = Connection(to_parent, readable=False)
    try:
        url, spec, tables, path, parent = inbox.recv()
        _child(url, spec, tables, path, inbox, outbox, parent)
    except BaseException as error:
        with contextlib.suppress(OSError):
            outbox.send(("error", f"{type(error).__name__}: {error}"))
        raise SystemExit(1) from None


def _child(
    url: str,
    spec: ExportSpec,
    tables: tuple[str, ...],
    path: str,
    inbox: Connection,
    outbox: Connection,
    parent: int,
) -> None:
    """The side tables' work: the export's snapshot, its tables' chunks as frames."""
    from app.exports import stream
    from app.exports.service import headers, load_context

    engine = create_db_engine(url, pool_size=1)
    postgresql = make_url(url).get_backend_name() != "sqlite"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    with session_scope(make_sessionmaker(engine), write=False) as session:
        connection = session.connection()  # connected before the export waits for it
        outbox.send(("opened",))
        _, snapshot, timeouts = inbox.recv()
        if postgresql:
            connection.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            connection.exec_driver_sql(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
            connection.exec_driver_sql(
                "SELECT set_config('statement_timeout', %s, true), "
                "set_config('lock_timeout', %s, true)",
                tuple(timeouts),
            )
        else:
            connection.exec_driver_sql("SELECT 1 FROM incidents LIMIT 1").all()
            outbox.send(("ready",))
        context = load_context(session, spec, with_attributes=False)
        heads = headers(context)
        end = _FRAME.pack(_END)
        for table in tables:
            for chunk in stream.table_chunks(session, spec, context, table, heads[table], True):
                if os.getppid() != parent:  # the export's process is gone: so is its reader
                    return
                _write(fd, _FRAME.pack(len(chunk)) + chunk)
            _write(fd, end)
    os.close(fd)
    engine.dispose()
