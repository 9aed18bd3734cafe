"""`cit serve` with one API process runs its job worker as a child process (its own GIL, so
spaCy scoring does not take the API's core), starts it again when it dies, and `/metrics` still
reports the worker's own figures once, beside the API's. A worker waits for a database it
cannot reach yet instead of exiting."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import URL, create_engine, func, make_url, select, text
from sqlalchemy.exc import OperationalError

from app import migrate
from app.codebooks.service import ensure_default_codebook
from app.config import Settings
from app.db import create_db_engine, make_sessionmaker, session_scope
from app.models import Job, Suggestion
from tests.ops.conftest import Process, Server, service_env


def _children(pid: int) -> list[tuple[int, str]]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
            found.append((int(child), cmdline.decode()))
    return found


def _nice(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def _suggested(db: Callable[[], Any]) -> bool:
    """Some story has its suggestions stored."""
    with db() as session:
        return bool(session.scalar(select(func.count()).select_from(Suggestion)))


def _wait(predicate: Callable[[], bool], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_one_process_serve_runs_the_worker_beside_it_and_reports_its_metrics(
    settings: Settings,
    make_survey: Callable[..., Any],
    db: Callable[[], Any],
    processes: list[Process],
    tmp_path: Path,
) -> None:
    with db() as session:
        ensure_default_codebook(session)  # the survey scores against it
    survey = make_survey(consent_text=None)
    server = Server(settings, tmp_path, CIT_WORKER_POLL_SECONDS="0.2").start()
    processes.append(server)
    assert server.popen is not None
    workers = [(pid, cmd) for pid, cmd in _children(server.popen.pid) if "worker" in cmd]
    assert len(workers) == 1, _children(server.popen.pid)
    # It yields the CPU to the API on PostgreSQL; on SQLite it must not wait for the CPU while
    # it holds the one write lock.
    assert _nice(workers[0][0]) == (10 if settings.database_url.startswith("postgresql") else 0)

    answer = httpx.post(
        f"{server.base}/api/v1/public/surveys/{survey.slug}/incidents",
        json={
            "what_happened": "The agent rebooked us on the next flight and waited with us.",
            "valence": "satisfying",
            "consent": True,
        },
    )
    assert answer.status_code == 201, answer.text

    _wait(lambda: _suggested(db), "the worker process to store suggestions")

    # A job the worker cannot run (an import without its file): one failed attempt, counted by
    # the worker process and reported by the API process.
    with db() as session:
        session.add(Job(kind="import", payload={}, max_attempts=1))
        session.commit()

    def failed() -> bool:
        with db() as session:
            return session.scalar(select(Job.status).where(Job.kind == "import")) == "failed"

    _wait(failed, "the worker to fail the import job")

    text = httpx.get(f"{server.base}/metrics").text
    families = [family.name for family in text_string_to_metric_families(text)]
    assert len(families) == len(set(families)), sorted(families)
    by_name = {family.name: family for family in text_string_to_metric_families(text)}
    failures = {
        sample.labels["kind"]: sample.value
        for sample in by_name["cit_job_failures"].samples
        if sample.name == "cit_job_failures_total"
    }
    assert failures == {"import": 1.0}
    submitted = [
        sample
        for sample in by_name["cit_http_requests"].samples
        if sample.name == "cit_http_requests_total"
        and sample.labels["route"] == "/api/v1/public/surveys/{slug}/incidents"
    ]
    assert [(s.labels["status"], s.value) for s in submitted] == [("201", 1.0)]

    # The worker dies with the API process.
    server.kill()
    worker_pid = workers[0][0]
    _wait(
        lambda: (
            not Path(f"/proc/{worker_pid}").exists()
            or "Z" in Path(f"/proc/{worker_pid}/stat").read_text().split()[2]
        ),
        "the worker to end with the API process",
        seconds=30,
    )


def test_serve_starts_its_worker_again_when_it_dies(
    settings: Settings,
    make_survey: Callable[..., Any],
    db: Callable[[], Any],
    processes: list[Process],
    tmp_path: Path,
) -> None:
    with db() as session:
        ensure_default_codebook(session)
    survey = make_survey(consent_text=None)
    server = Server(settings, tmp_path, CIT_WORKER_POLL_SECONDS="0.2", CIT_WORKER_NICE="5")
    server.start()
    processes.append(server)
    assert server.popen is not None
    serve_pid = server.popen.pid

    def worker_pids() -> list[int]:
        return [pid for pid, cmd in _children(serve_pid) if "worker" in cmd]

    _wait(lambda: len(worker_pids()) == 1, "the first worker")
    (first,) = worker_pids()
    assert _nice(first) == 5
    os.kill(first, signal.SIGKILL)  # the OOM killer, say
    _wait(lambda: worker_pids() not in ([], [first]), "a new worker process")
    assert len(worker_pids()) == 1
    assert _nice(worker_pids()[0]) == 5  # started again as the first was

    answer = httpx.post(
        f"{server.base}/api/v1/public/surveys/{survey.slug}/incidents",
        json={"what_happened": "The agent found my bag.", "valence": "satisfying", "consent": True},
    )
    assert answer.status_code == 201, answer.text

    _wait(lambda: _suggested(db), "the new worker to store suggestions")
    output = server.output()
    assert "the job worker exited (code -9); starting it again" in output
    assert "Traceback" not in output


def _server_url(settings: Settings) -> URL:
    """A PostgreSQL server to make databases on: the suite's own, else the local one."""
    url = settings.database_url
    if not url.startswith("postgresql"):
        url = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    return make_url(url)


def test_a_worker_started_before_its_database_waits_for_it(
    settings: Settings, processes: list[Process], tmp_path: Path
) -> None:
    # A database that does not exist yet cannot be reached (PostgreSQL: SQLite would create
    # its file); it appears whole, migrated and with a job, by a rename.
    server = _server_url(settings)
    name = f"cit_wait_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        admin.connect().close()
    except OperationalError:
        if os.environ.get("CI") == "true":
            pytest.fail(f"no PostgreSQL at {server.host}:{server.port} (CI needs it)")
        pytest.skip(f"no PostgreSQL at {server.host}:{server.port}")
    url = server.set(database=name).render_as_string(hide_password=False)
    env = service_env(settings.model_copy(update={"database_url": url}),
                      CIT_WORKER_POLL_SECONDS="0.2")  # fmt: skip
    worker = Process(["worker"], env, tmp_path / "worker.log").start()
    processes.append(worker)
    try:
        _wait(lambda: "cannot reach the database" in worker.output(), "the worker to say it waits")
        assert worker.popen is not None and worker.popen.poll() is None

        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}_s"))
        staged = server.set(database=f"{name}_s").render_as_string(hide_password=False)
        migrate.upgrade(staged)
        engine = create_db_engine(staged)
        with session_scope(make_sessionmaker(engine)) as session:
            session.add(Job(kind="import", payload={}, max_attempts=1))  # fails: no file
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f"ALTER DATABASE {name}_s RENAME TO {name}"))

        engine = create_db_engine(url)
        try:

            def failed() -> bool:
                with engine.connect() as conn:
                    return conn.scalar(select(Job.status).where(Job.kind == "import")) == "failed"

            _wait(failed, "the worker to run the job once its database is there")
        finally:
            engine.dispose()
        assert worker.popen.poll() is None
        assert "Traceback" not in worker.output()
    finally:
        worker.kill()
        with admin.connect() as conn:
            for database in (name, f"{name}_s"):
                conn.execute(text(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        admin.dispose()
