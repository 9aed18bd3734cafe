"""SQLite's write lock between processes (app.db._begin_immediate): a writer waiting for
another process's write transaction begins within a couple of milliseconds of that one's
commit, not after one of SQLite's own busy-handler sleeps (up to 100 ms each); and it still
gives up with "database is locked" after the lock timeout.

SQLite's own, so these tests run on a SQLite database of their own in every suite."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy.exc
from sqlalchemy import Engine, text

from app.db import create_db_engine, write_engine


@pytest.fixture
def database(tmp_path: Path) -> Iterator[tuple[Engine, Path]]:
    path = tmp_path / "lock.db"
    engine = create_db_engine(f"sqlite:///{path}", lock_timeout_seconds=2)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (n INTEGER)"))
    yield engine, path
    engine.dispose()


def _hold_then_commit(path: Path, seconds: float, released: list[float]) -> threading.Thread:
    """Another process's write transaction (a connection of its own), committed after
    `seconds`; the moment just before its COMMIT goes into `released` (after it, the waiting
    writer may have begun before this thread runs again)."""
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO t VALUES (1)")

    def commit_later() -> None:
        time.sleep(seconds)
        released.append(time.monotonic())
        other.execute("COMMIT")
        other.close()

    thread = threading.Thread(target=commit_later)
    thread.start()
    return thread


def test_a_writer_begins_as_soon_as_the_other_process_commits(
    database: tuple[Engine, Path],
) -> None:
    engine, path = database
    lateness = []
    for _ in range(3):
        released: list[float] = []
        # Released between two of SQLite's own checks (at 228 and 328 ms): its handler would
        # begin ~90 ms late.
        holder = _hold_then_commit(path, 0.24, released)
        with write_engine(engine).begin() as conn:
            began = time.monotonic()
            conn.execute(text("INSERT INTO t VALUES (2)"))
        holder.join()
        lateness.append(began - released[0])
    assert all(late >= 0 for late in lateness)  # it did wait for the other's commit
    assert min(lateness) < 0.03, lateness
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 6


def test_a_writer_still_gives_up_after_the_lock_timeout(database: tuple[Engine, Path]) -> None:
    engine, path = database
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        began = time.monotonic()
        with (
            pytest.raises(sqlalchemy.exc.OperationalError, match="locked"),
            write_engine(engine).begin(),
        ):
            pass
        assert 1.9 < time.monotonic() - began < 5
    finally:
        other.execute("ROLLBACK")
        other.close()
    with write_engine(engine).begin() as conn:  # and the connection's busy timeout is back
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 2000
