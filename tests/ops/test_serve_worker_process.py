"""`cit serve` with one API process runs its job worker as a child process (its own GIL, so
spaCy scoring does not take the API's core), and `/metrics` still reports the worker's own
figures once, beside the API's."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from app.codebooks.service import ensure_default_codebook
from app.config import Settings
from app.models import Job, Suggestion
from tests.ops.conftest import Process, Server


def _children(pid: int) -> list[tuple[int, str]]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
            found.append((int(child), cmdline.decode()))
    return found


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

    answer = httpx.post(
        f"{server.base}/api/v1/public/surveys/{survey.slug}/incidents",
        json={
            "what_happened": "The agent rebooked us on the next flight and waited with us.",
            "valence": "satisfying",
            "consent": True,
        },
    )
    assert answer.status_code == 201, answer.text

    def suggested() -> bool:
        with db() as session:
            return bool(session.scalar(select(func.count()).select_from(Suggestion)))

    _wait(suggested, "the worker process to store suggestions")

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
