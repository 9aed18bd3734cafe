"""A job worker whose database is away says so in one line per round (no traceback), and does
what it does at its start (the redaction check) once the database answers, not never."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
from fastapi import FastAPI

from app.config import Settings
from app.db import create_db_engine, make_sessionmaker
from app.suggestions.worker import Worker
from tests.ops.conftest import free_port


def test_a_worker_with_its_database_away_waits_then_checks_the_redaction(
    app: FastAPI, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # Nothing listens on this port: every connection is refused, as in an outage.
    away = create_db_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none")
    worker = Worker(
        make_sessionmaker(away),
        settings.model_copy(update={"worker_poll_seconds": 0.05}),
        name="outage",
    )
    # As with an NER pipeline: the check reads the stories (without one it reads nothing).
    worker.required_redaction = "ner:test"
    checks: list[Any] = []
    check = worker.queue_redaction

    def observed() -> int | None:  # the real check, counted
        checks.append(worker.factory)
        return check()

    worker.queue_redaction = observed  # type: ignore[method-assign]
    caplog.set_level(logging.INFO, logger="cit")
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while sum("database unavailable" in r.getMessage() for r in caplog.records) < 2:
            assert time.monotonic() < deadline, [r.getMessage() for r in caplog.records]
            time.sleep(0.05)
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert not [r for r in caplog.records if r.exc_info]

        worker.factory = app.state.sessionmaker  # the database is back
        deadline = time.monotonic() + 30
        while not checks or checks[-1] is not app.state.sessionmaker:
            assert time.monotonic() < deadline, "the redaction was never checked"
            time.sleep(0.05)
        calls = len(checks)
        time.sleep(0.3)  # more rounds run; the check is not repeated
        assert len(checks) == calls
    finally:
        worker.stop()
        thread.join(timeout=30)
        away.dispose()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
