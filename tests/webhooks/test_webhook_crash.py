"""kill -9 of a real `cit worker` while it delivers webhooks: no event is lost, and each story's
events still reach the subscriber in order (some twice: delivery is at least once)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from app.config import Settings
from app.models import Survey, WebhookDelivery, WebhookEvent
from tests.ops.conftest import Process, processes, service_env  # noqa: F401 - fixture
from tests.webhooks.conftest import Receiver

STORIES = 24
EVENTS = ["story.received", "story.redacted", "suggestions.ready"]


def _wait(condition: Callable[[], bool], seconds: float, what: str, logs: list[Process]) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} not within {seconds} s; {logs[-1].output()[-3000:]}")


def test_kill_9_of_the_worker_mid_delivery_loses_no_event(
    client: TestClient,
    admin: dict[str, str],
    settings: Settings,
    survey: Survey,
    db: Callable[[], Any],
    receiver: Receiver,
    processes: list[Process],  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    created = client.post(
        "/api/v1/webhooks", json={"url": receiver.url(), "events": EVENTS}, headers=admin
    ).json()
    receiver.secrets["/hook"] = created["secret"]
    receiver.pause = lambda n: 0.25  # every answer takes a while: the kill lands mid-send
    for i in range(STORIES):
        response = client.post(
            f"/api/v1/public/surveys/{survey.slug}/incidents",
            json={
                "what_happened": f"Story {i}: the transfer went out ten times too large.",
                "valence": "dissatisfying",
                "submission_id": f"webhook-crash-{i:04d}",
            },
        )
        assert response.status_code == 201, response.text

    env = service_env(
        settings,
        CIT_SUGGEST_LEASE_SECONDS="5",
        CIT_WEBHOOK_TIMEOUT_SECONDS="2",  # a killed worker's deliveries return after 9 s
        CIT_WEBHOOK_CONCURRENCY="4",
        CIT_WEBHOOK_ALLOW_PRIVATE_ADDRESSES="true",  # the receiver listens on loopback
        CIT_WORKER_POLL_SECONDS="0.2",
    )
    first = Process(["worker"], env, tmp_path / "worker-1.log").start()
    processes.append(first)
    _wait(lambda: len(receiver.requests) >= 12, 90, "12 deliveries", processes)
    first.kill()  # SIGKILL: no clean-up of any kind
    at_kill = len(receiver.requests)
    assert at_kill < STORIES * len(EVENTS)  # the second worker has work left to do
    second = Process(["worker"], env, tmp_path / "worker-2.log").start()
    processes.append(second)

    expected = STORIES * len(EVENTS)

    def all_delivered() -> bool:
        # The receiver counts a request when it arrives, the worker records it when the answer
        # is back: wait for both.
        if len({r.json["id"] for r in receiver.delivered()}) < expected:
            return False
        with db() as session:
            return set(session.scalars(select(WebhookDelivery.status))) == {"delivered"}

    _wait(all_delivered, 120, f"{expected} distinct events delivered", processes)
    second.kill()

    assert receiver.bad_signatures == []
    delivered = receiver.delivered()
    with db() as session:
        event_ids = {f"evt_{i}" for i in session.scalars(select(WebhookEvent.id))}
        statuses = set(session.scalars(select(WebhookDelivery.status)))
    assert {r.json["id"] for r in delivered} == event_ids and len(event_ids) == expected
    assert statuses == {"delivered"}
    # Order per story: an event is first delivered only after every earlier one of its story.
    first_seen: dict[int, list[str]] = {}
    for request in delivered:
        seen = first_seen.setdefault(request.json["story_id"], [])
        if request.type not in seen:
            seen.append(request.type)
    assert all(types == EVENTS for types in first_seen.values()), first_seen
    # Duplicates only from the sends in flight when the worker died.
    duplicates = len(delivered) - len(event_ids)
    assert 0 <= duplicates <= 4, (duplicates, at_kill)
