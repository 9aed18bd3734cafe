"""The zip's side tables (the suggestions, on SQLite the codings too) made by a second process
(app.exports.side), as a large export makes them: the same bytes as the sequential zip, the
same snapshot as the export's (a write committed between the two transactions' starts is seen
by neither), a failed or killed child fails the export, and an export stopped early (a client
gone) leaves no child and no file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.engine import make_url

from app.db import session_scope
from app.exports import service, side, stream
from app.models import Incident, Suggestion
from tests.data.test_exports_side_tables import _specs, odd  # noqa: F401  (a fixture)
from tests.data.test_exports_sql_jsonl import nested  # noqa: F401  (a fixture, by import)
from tests.data.test_exports_sql_lines import hostile  # noqa: F401  (a fixture, by import)

SEQUENTIAL = 10**12  # a threshold no test export reaches


class _Spy(side.SideTables):
    """SideTables that remembers every instance made (the export's child and its file)."""

    made: list[_Spy] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _Spy.made.append(self)
        super().__init__(*args, **kwargs)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_Spy]]:
    _Spy.made = []
    monkeypatch.setattr(side, "SideTables", _Spy)
    yield _Spy
    for helper in _Spy.made:  # every child ended, every file gone, whatever the test did
        assert helper.process is not None and helper.process.poll() is not None
        assert not os.path.exists(helper.path)


def _zip(factory: Any, spec: Any, parallel_from: int) -> bytes:
    return b"".join(stream.chunks(factory, spec, "csv", parallel_from=parallel_from))


@pytest.mark.parametrize("tables", [None, ("suggestions",), ("codings", "suggestions")])
def test_the_zip_is_the_sequential_zip_byte_for_byte(
    app: Any,
    odd: dict[str, Any],  # noqa: F811
    spy: type[_Spy],
    monkeypatch: pytest.MonkeyPatch,
    tables: tuple[str, ...] | None,
) -> None:
    """Whichever tables the child makes (None: this database's `SIDE_TABLES`)."""
    factory = app.state.sessionmaker
    dialect = app.state.engine.dialect.name
    if tables is not None:
        monkeypatch.setitem(side.SIDE_TABLES, dialect, tables)
    specs = _specs(odd)
    for spec in specs:
        assert _zip(factory, spec, 0) == _zip(factory, spec, SEQUENTIAL)
    assert len(spy.made) == len(specs)  # the parallel path ran for each, the sequential never
    assert {helper.tables for helper in spy.made} == {tables or side.SIDE_TABLES[dialect]}
    # Below the threshold (the default, or a count the export does not reach): no child.
    _zip(factory, specs[0], side.PARALLEL_FROM)
    _zip(factory, specs[0], len(odd["ids"]) + 1000)
    assert len(spy.made) == len(specs)
    # At the threshold: one.
    with session_scope(factory, write=False) as session:
        stories = service.count_stories(session, specs[0])
    _zip(factory, specs[0], stories)
    assert len(spy.made) == len(specs) + 1


def test_a_write_committed_between_the_first_reads_is_seen_by_neither(
    app: Any,
    odd: dict[str, Any],  # noqa: F811
    spy: type[_Spy],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The write is tried after the export's first read and before the child's: it commits
    once both snapshots are taken (SQLite: it waits for the write lock; PostgreSQL: the child
    imports the export's snapshot), so the zip is the one from before it."""
    factory = app.state.sessionmaker
    spec = _specs(odd)[0]
    story = odd["ids"]["plain_items"]
    before = _zip(factory, spec, SEQUENTIAL)
    failures: list[BaseException] = []
    writers: list[threading.Thread] = []

    def write() -> None:
        try:
            with session_scope(factory) as session:
                session.execute(
                    update(Suggestion)
                    .where(Suggestion.incident_id == story)
                    .values(items=[{"code": "written meanwhile", "score": 0.5}])
                )
                session.execute(
                    update(Incident).where(Incident.id == story).values(outcome="written meanwhile")
                )
        except BaseException as error:
            failures.append(error)

    def between(_session: Any) -> None:
        writer = threading.Thread(target=write)
        writer.start()
        writers.append(writer)
        # Time to commit, were nothing holding it back (SQLite: the write lock).
        writer.join(0.5)

    monkeypatch.setattr(side, "_between_first_reads", between)
    during = _zip(factory, spec, 0)
    monkeypatch.setattr(side, "_between_first_reads", None)
    writers[0].join()
    assert not failures
    assert during == before
    after = _zip(factory, spec, 0)
    assert after != before
    assert after == _zip(factory, spec, SEQUENTIAL)
    assert b"written meanwhile" in b"".join(stream.chunks(factory, spec, "csv", "suggestions"))


def test_a_child_that_fails_fails_the_export(
    app: Any,
    odd: dict[str, Any],  # noqa: F811
    spy: type[_Spy],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    factory = app.state.sessionmaker
    spec = _specs(odd)[0]
    url = make_url(app.state.engine.url)
    if url.get_backend_name() == "sqlite":
        elsewhere = url.set(database=str(tmp_path / "empty.db"))  # no tables there
        message = "no such table"
    else:
        elsewhere = url.set(database=f"{url.database}_absent")
        message = "does not exist"
    wrong = elsewhere.render_as_string(hide_password=False)
    monkeypatch.setattr(side, "_child_url", lambda _engine: wrong)
    with pytest.raises(side.SideTableFailed, match=message):
        _zip(factory, spec, 0)


def test_a_child_killed_before_its_tables_end_fails_the_export(
    app: Any,
    odd: dict[str, Any],  # noqa: F811
    spy: type[_Spy],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The child dies with part of its table written (the file cut inside its first frame):
    the export raises, after the members before it, instead of finishing a short member."""
    factory = app.state.sessionmaker
    spec = _specs(odd)[0]
    read = side.SideTables.chunks

    def killed(self: side.SideTables, table: str) -> Iterator[bytes]:
        assert self.process is not None
        self.process.wait()  # it has written everything ...
        assert self._fd is not None
        os.ftruncate(self._fd, 100)  # ... but only this much had reached the file
        return read(self, table)

    monkeypatch.setattr(side.SideTables, "chunks", killed)
    written: list[bytes] = []
    with pytest.raises(side.SideTableFailed, match="before its table's end"):
        for chunk in stream.chunks(factory, spec, "csv", parallel_from=0):
            written.append(chunk)
    assert written  # the members before it went out first


def test_a_client_gone_mid_stream_ends_the_child_and_removes_its_file(
    app: Any,
    odd: dict[str, Any],  # noqa: F811
    spy: type[_Spy],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    factory = app.state.sessionmaker
    spec = _specs(odd)[0]
    share = side.SideTables.share

    def paused(self: side.SideTables, session: Any) -> None:
        share(self, session)
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)  # still at work when the client goes

    monkeypatch.setattr(side.SideTables, "share", paused)
    chunks = stream.chunks(factory, spec, "csv", parallel_from=0)
    assert next(chunks).startswith(b"PK")
    (helper,) = spy.made
    assert helper.process is not None and helper.process.poll() is None
    chunks.close()  # what the server does when the client goes away
    assert helper.process.poll() is not None
    assert not os.path.exists(helper.path)
    assert helper._fd is None


def test_the_api_and_cit_export_write_the_same_zip_through_the_child(
    app: Any,
    client: Any,
    odd: dict[str, Any],  # noqa: F811
    admin_person: Any,
    spy: type[_Spy],
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    tmp_path: Path,
) -> None:
    """From inside the ASGI app (the response streamed from a worker thread) and from the
    command, the child starts, reads the snapshot and ends; the zip is the sequential one."""
    from typer.testing import CliRunner

    from app.cli import cli
    from app.config import get_settings

    factory = app.state.sessionmaker
    spec = _specs(odd)[0]
    survey = odd["survey"].id
    sequential = _zip(factory, spec, SEQUENTIAL)
    monkeypatch.setattr(side, "PARALLEL_FROM", 1)
    response = client.get(
        f"/api/v1/surveys/{survey}/export", params={"format": "csv"}, headers=admin_person.headers
    )
    assert response.status_code == 200, response.text
    assert response.content == sequential
    assert len(spy.made) == 1
    monkeypatch.setenv("CIT_DATABASE_URL", database_url)
    monkeypatch.setenv("CIT_ENV", "development")
    monkeypatch.delenv("CIT_SECRET_KEY", raising=False)
    get_settings.cache_clear()
    try:
        out = tmp_path / "export.zip"
        result = CliRunner().invoke(cli, ["export", str(survey), "--out", str(out)])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == sequential
    assert len(spy.made) == 2


def test_the_child_starts_without_spacy() -> None:
    """The child imports what its entry imports (app.exports.side) and the modules its tables
    are made by: none of them pulls in spaCy, thinc or numpy (~0.7 s of its start, which a
    SQLite export waits for)."""
    code = (
        "import sys; import app.exports.side; from app.exports import stream; "
        "from app.exports.service import headers, load_context; "
        "print(','.join(m for m in ('spacy', 'thinc', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": side._python_path()},
    )
    assert out.stdout.strip() == ""
