"""kill -9 of the API and of the worker in the middle of a load: no acknowledged story is lost
or stored twice, and every story gets its suggestions once the worker is back."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from app.codebooks.service import ensure_default_codebook
from app.config import Settings
from app.models import Incident, Suggestion
from tests.ops.conftest import Process, Server, service_env

TOTAL = 160
CLIENTS = 4


def test_kill_9_of_api_and_worker_loses_no_acknowledged_story(
    settings: Settings,
    make_survey: Callable[..., Any],
    db: Callable[[], Any],
    processes: list[Process],
    tmp_path: Path,
) -> None:
    with db() as session:
        ensure_default_codebook(session)  # the survey scores against it
    survey = make_survey(consent_text=None)
    api = Server(settings, tmp_path, "--no-worker").start()
    worker_env = service_env(settings, CIT_SUGGEST_LEASE_SECONDS="5")
    worker = Process(["worker"], worker_env, tmp_path / "worker.log").start()
    processes += [api, worker]

    acknowledged: set[str] = set()
    errors: list[str] = []
    lock = threading.Lock()
    next_id = iter(range(TOTAL))

    def client() -> None:
        # A real client: it retries the same submission id until the service acknowledges it.
        with httpx.Client(timeout=10) as http:
            for i in next_id:
                key = f"crash-{i:05d}"
                while True:
                    try:
                        response = http.post(
                            f"{api.base}/api/v1/public/surveys/{survey.slug}/incidents",
                            json={
                                "what_happened": f"Story {i}: the bag never arrived in Denver.",
                                "valence": "dissatisfying",
                                "submission_id": key,
                            },
                        )
                    except httpx.TransportError:
                        time.sleep(0.05)
                        continue
                    if response.status_code in (200, 201):
                        with lock:
                            acknowledged.add(key)
                        break
                    if response.status_code != 503:  # busy or restarting: retry; else a failure
                        errors.append(f"{response.status_code}: {response.text[:300]}")
                        return
                    time.sleep(0.05)

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()

    def wait_for(count: int) -> None:
        deadline = time.monotonic() + 120
        while len(acknowledged) < count:
            assert not errors, errors[0]
            assert time.monotonic() < deadline, f"stuck at {len(acknowledged)} acknowledged"
            time.sleep(0.02)

    wait_for(TOTAL // 3)
    api.kill()  # kill -9 while requests are in flight
    api.start()
    wait_for(TOTAL // 2)
    worker.kill()
    worker.start()
    for thread in threads:
        thread.join(timeout=180)
    assert not errors, errors[0]
    assert len(acknowledged) == TOTAL

    with db() as session:
        keys = list(
            session.scalars(select(Incident.submission_key).where(Incident.survey_id == survey.id))
        )
    assert len(keys) == len(set(keys)) == TOTAL  # none twice, none missing, none extra
    assert set(keys) == acknowledged

    # The restarted worker takes over the jobs the killed one held (after their lease) and
    # scores every story.
    deadline = time.monotonic() + 120
    while True:
        with db() as session:
            scored = session.scalar(select(func.count(func.distinct(Suggestion.incident_id))))
        if scored == TOTAL:
            break
        assert time.monotonic() < deadline, (
            f"{scored} of {TOTAL} stories scored; worker log: {worker.output()[-1500:]}"
        )
        time.sleep(0.5)
