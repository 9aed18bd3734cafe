"""A PostgreSQL outage, on a private cluster this test creates (never the shared one): the API
answers 503 problem+json with Retry-After, the form keeps every typed word, /readyz says 503
while /healthz stays 200, and the same server process, its job worker included, recovers when the
database is back."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, func, select

from app import migrate
from app.codebooks.service import ensure_default_codebook
from app.config import Settings
from app.db import create_db_engine, make_sessionmaker, session_scope
from app.models import Incident, Suggestion
from app.surveys import service as surveys
from app.surveys.schemas import SurveyCreate
from tests.ops.conftest import Process, Server, free_port


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI needs it)")
    pytest.skip(reason)


@pytest.fixture
def private_cluster() -> Iterator[tuple[str, str, str]]:
    """(version, name, url) of a PostgreSQL cluster of this test's own, on a free port."""
    if not shutil.which("pg_createcluster") or not Path("/etc/postgresql").is_dir():
        _missing("PostgreSQL's cluster tools (pg_createcluster) are not installed")
    version = sorted(os.listdir("/etc/postgresql"))[0]
    name = f"cit_outage_{uuid.uuid4().hex[:8]}"
    port = free_port()
    subprocess.run(
        ["pg_createcluster", version, name, "-p", str(port), "--",
         "--auth-host=trust", "--auth-local=trust"],
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        _ctl(version, name, "start")
        yield version, name, f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            ["pg_dropcluster", "--stop", version, name], check=False, capture_output=True
        )


def _ctl(version: str, name: str, action: str) -> None:
    command = ["pg_ctlcluster", "--skip-systemctl-redirect", version, name, action]
    if action == "stop":
        command += ["-m", "fast"]
    subprocess.run(command, check=True, capture_output=True)


def _submit(server: Server, slug: str, key: str) -> httpx.Response:
    return httpx.post(
        f"{server.base}/api/v1/public/surveys/{slug}/incidents",
        json={"what_happened": "The agent found my bag.", "valence": "satisfying",
              "submission_id": key},
        timeout=30,
    )  # fmt: skip


def _suggested(engine: Engine, submission_key: str) -> bool:
    with engine.connect() as conn:
        found = conn.scalar(
            select(func.count())
            .select_from(Suggestion)
            .join(Incident, Incident.id == Suggestion.incident_id)
            .where(Incident.submission_key == submission_key)
        )
    return bool(found)


def test_postgres_outage_gives_503s_keeps_the_form_text_and_recovers(
    private_cluster: tuple[str, str, str],
    settings: Settings,
    processes: list[Process],
    tmp_path: Path,
) -> None:
    version, name, url = private_cluster
    migrate.upgrade(url)
    engine = create_db_engine(url)
    with session_scope(make_sessionmaker(engine)) as session:
        ensure_default_codebook(session)  # the stories are scored against it
        survey = surveys.create_survey(
            session, SurveyCreate.model_validate({"title": "Outage", "open": True}), None
        )
        slug = survey.slug
    engine.dispose()
    server = Server(settings.model_copy(update={"database_url": url}), tmp_path).start()
    processes.append(server)

    assert _submit(server, slug, "before-outage").status_code == 201
    assert httpx.get(f"{server.base}/readyz").status_code == 200
    form = httpx.get(f"{server.base}/s/{slug}")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert form.status_code == 200 and token is not None

    _ctl(version, name, "stop")

    answer = _submit(server, slug, "during-outage")
    assert answer.status_code == 503
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert int(answer.headers["retry-after"]) > 0
    assert answer.json()["status"] == 503

    story = "The gate agent said <nothing> & walked off; I waited 3 hours.\nSecond line: ünïcode."
    posted = httpx.post(
        f"{server.base}/s/{slug}",
        data={
            "what_happened": story,
            "valence": "dissatisfying",
            "csrf_token": token.group(1),
            "submission_id": "outage-form-1",
        },
        cookies=form.cookies,
        timeout=30,
    )
    assert posted.status_code == 503
    assert "text/html" in posted.headers["content-type"]
    assert "retry-after" in posted.headers
    # Every typed word comes back in the form (HTML-escaped inside the textarea), with a
    # message asking to send again; the submission id is kept so a retry stores one story.
    escaped = story.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert escaped in posted.text
    assert "again in a moment" in posted.text
    assert 'value="outage-form-1"' in posted.text

    ready = httpx.get(f"{server.base}/readyz")
    assert ready.status_code == 503
    assert ready.headers["content-type"].startswith("application/problem+json")
    assert httpx.get(f"{server.base}/healthz").status_code == 200

    _ctl(version, name, "start")
    deadline = time.monotonic() + 60
    statuses = []
    while True:  # the same process, not restarted, recovers by itself
        statuses.append(_submit(server, slug, "after-outage").status_code)
        if statuses[-1] == 201:
            break
        assert statuses[-1] == 503, statuses
        assert time.monotonic() < deadline, statuses
        time.sleep(0.5)
    assert httpx.get(f"{server.base}/readyz").status_code == 200
    # The job worker came through too (whether the outage began before it had started or
    # while it ran): the story stored after the outage gets its suggestions.
    engine = create_db_engine(url)
    try:
        deadline = time.monotonic() + 60
        while not _suggested(engine, "after-outage"):
            assert time.monotonic() < deadline, "no suggestions after the outage"
            time.sleep(0.5)
    finally:
        engine.dispose()
    output = server.output()
    # The message shows the first traceback whole (its end names the exception), not the count.
    assert "Traceback" not in output, output[output.index("Traceback") :][:3000]
    assert story not in server.output()
