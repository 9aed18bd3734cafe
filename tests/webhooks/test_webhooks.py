"""Webhooks end to end: subscriptions through the API, events from the real code paths, signed
deliveries to a real HTTP receiver on loopback, retries, order per story, redelivery, disabling."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from app.config import Settings
from app.models import (
    Codebook,
    CodebookVersion,
    Incident,
    Job,
    NlpModel,
    Survey,
    WebhookDelivery,
    WebhookEvent,
    WebhookSubscription,
)
from app.models.base import utcnow
from app.suggestions import service as suggestions
from app.suggestions.worker import Worker
from app.webhooks import events, service
from app.webhooks.delivery import (
    DELIVER,
    WebhookDispatcher,
    backoff_seconds,
    signature_header,
    verify_signature,
)
from tests.webhooks.conftest import ALL_EVENTS, Receiver

PROBLEM = "application/problem+json"
STORY = {
    "what_happened": "The agent sent $2,000 instead of $200; write to jane.doe@example.com.",
    "valence": "dissatisfying",
    "circumstances": "Paying a bill at the branch.",
}
_KEYS = itertools.count(1)
LIFECYCLE = [
    "story.received",
    "story.redacted",
    "suggestions.ready",
    "coding.saved",
    "story.final",
    "story.erased",
]


def _subscribe(
    client: TestClient, admin: dict[str, str], receiver: Receiver, path: str = "/hook", **body: Any
) -> dict[str, Any]:
    response = client.post(
        "/api/v1/webhooks",
        json={"url": receiver.url(path), "events": ALL_EVENTS, **body},
        headers=admin,
    )
    assert response.status_code == 201, response.text
    created = dict(response.json())
    receiver.secrets[path] = created["secret"]
    return created


def _submit(client: TestClient, survey: Survey, n: int = 1) -> None:
    for _ in range(n):
        response = client.post(
            f"/api/v1/public/surveys/{survey.slug}/incidents",
            json={**STORY, "submission_id": f"hook-{next(_KEYS):06d}"},
        )
        assert response.status_code == 201, response.text


def _story_ids(db: Callable[[], Any], survey: Survey) -> list[int]:
    with db() as session:
        return list(
            session.scalars(
                select(Incident.id).where(Incident.survey_id == survey.id).order_by(Incident.id)
            )
        )


def _suggest(app: FastAPI, settings: Settings) -> None:
    Worker(app.state.sessionmaker, settings).drain()


# Subscriptions ----------------------------------------------------------------------------------


def test_subscriptions_api_shows_the_secret_once(
    client: TestClient, admin: dict[str, str], receiver: Receiver
) -> None:
    created = _subscribe(client, admin, receiver, description="CRM")
    assert created["secret"].startswith("whsec_") and len(created["secret"]) > 30
    assert created["active"] is True and created["include_text"] is False
    hook_id = created["id"]
    read = client.get(f"/api/v1/webhooks/{hook_id}", headers=admin).json()
    assert "secret" not in read and read["events"] == ALL_EVENTS
    assert [h["id"] for h in client.get("/api/v1/webhooks", headers=admin).json()["items"]] == [
        hook_id
    ]
    given = client.post(
        "/api/v1/webhooks",
        json={"url": receiver.url(), "events": ["story.final"], "secret": "s" * 20},
        headers=admin,
    ).json()
    assert given["secret"] == "s" * 20

    patched = client.patch(
        f"/api/v1/webhooks/{hook_id}",
        json={"events": ["story.final", "story.final"], "include_text": True},
        headers=admin,
    ).json()
    assert patched["events"] == ["story.final"] and patched["include_text"] is True
    assert "secret" not in patched
    rotated = client.patch(
        f"/api/v1/webhooks/{hook_id}", json={"rotate_secret": True}, headers=admin
    ).json()
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != created["secret"]

    assert client.delete(f"/api/v1/webhooks/{hook_id}", headers=admin).status_code == 204
    missing = client.get(f"/api/v1/webhooks/{hook_id}", headers=admin)
    assert missing.status_code == 404 and missing.headers["content-type"] == PROBLEM


def test_subscriptions_validate_their_input(client: TestClient, admin: dict[str, str]) -> None:
    for body in (
        {"url": "ftp://example.org/x", "events": ["story.final"]},
        {"url": "http://127.0.0.1:8811/x", "events": ["story.nope"]},
        {"url": "http://127.0.0.1:8811/x", "events": []},
        {"url": "http://127.0.0.1:8811/x", "events": ["story.final"], "secret": "short"},
        {"url": "http://127.0.0.1:8811/x", "events": ["story.final"], "colour": "red"},
    ):
        response = client.post("/api/v1/webhooks", json=body, headers=admin)
        assert response.status_code == 422, body
        assert response.headers["content-type"] == PROBLEM


def test_only_admins_manage_webhooks(
    client: TestClient,
    admin: dict[str, str],
    token_for: Callable[..., dict[str, str]],
    receiver: Receiver,
) -> None:
    hook_id = _subscribe(client, admin, receiver)["id"]
    calls = [
        ("POST", "/api/v1/webhooks", {"url": receiver.url(), "events": ["story.final"]}),
        ("GET", "/api/v1/webhooks", None),
        ("GET", f"/api/v1/webhooks/{hook_id}", None),
        ("PATCH", f"/api/v1/webhooks/{hook_id}", {"active": False}),
        ("DELETE", f"/api/v1/webhooks/{hook_id}", None),
        ("GET", f"/api/v1/webhooks/{hook_id}/deliveries", None),
        ("GET", f"/api/v1/webhooks/{hook_id}/deliveries/1", None),
        ("POST", f"/api/v1/webhooks/{hook_id}/deliveries/1/redeliver", None),
    ]
    for role in ("researcher", "viewer"):
        headers = token_for(role)
        for method, path, body in calls:
            response = client.request(method, path, json=body, headers=headers)
            assert response.status_code == 403, (role, method, path)
            assert response.headers["content-type"] == PROBLEM
    for method, path, body in calls:
        assert client.request(method, path, json=body).status_code == 401
    # The subscription is untouched by all of that.
    assert client.get(f"/api/v1/webhooks/{hook_id}", headers=admin).json()["active"] is True


def test_openapi_declares_the_problems(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    redeliver = paths["/api/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"]["post"]
    for status in ("401", "403", "404", "409"):
        assert "application/problem+json" in redeliver["responses"][status]["content"]


# Publishing -------------------------------------------------------------------------------------


def test_publish_is_part_of_the_callers_transaction(db: Callable[[], Any]) -> None:
    with pytest.raises(events.UnknownEventType), db() as session:
        events.publish(session, "story.exploded", {})
    with pytest.raises(RuntimeError), db() as session:
        events.publish(session, events.ALERT_FIRED, {"alert_id": 1}, survey_id=3)
        raise RuntimeError("the change fails: its event goes with it")
    with db() as session:
        events.publish(session, events.ALERT_FIRED, {"alert_id": 2}, survey_id=3)
    with db() as session:
        rows = session.execute(select(WebhookEvent.event_type, WebhookEvent.payload)).all()
    assert [(t, p) for t, p in rows] == [("alert.fired", {"alert_id": 2})]


def test_events_nobody_wants_are_dropped(
    client: TestClient,
    admin: dict[str, str],
    survey: Survey,
    db: Callable[[], Any],
    dispatcher: Callable[..., WebhookDispatcher],
    receiver: Receiver,
) -> None:
    _subscribe(client, admin, receiver, events=["story.final"])
    _submit(client, survey, 3)
    with db() as session:
        assert session.scalar(select(func.count()).select_from(WebhookEvent)) == 3
    dispatcher().drain()
    with db() as session:
        assert session.scalar(select(func.count()).select_from(WebhookEvent)) == 0
        assert session.scalar(select(func.count()).select_from(WebhookDelivery)) == 0
    assert receiver.requests == []


# Delivery ---------------------------------------------------------------------------------------


def test_a_storys_events_arrive_signed_in_order_with_ids_and_codes_only(
    app: FastAPI,
    client: TestClient,
    admin: dict[str, str],
    settings: Settings,
    survey: Survey,
    db: Callable[[], Any],
    dispatcher: Callable[..., WebhookDispatcher],
    receiver: Receiver,
    review: Any,
    person: Callable[..., Any],
) -> None:
    _subscribe(client, admin, receiver)
    _submit(client, survey)
    [story_id] = _story_ids(db, survey)
    _suggest(app, settings)
    coder = person("researcher")
    review.code(coder, story_id, ["complaint"])
    erased = client.delete(f"/api/v1/incidents/{story_id}?reason=asked", headers=admin)
    assert erased.status_code == 200, erased.text
    hooks = dispatcher()
    hooks.drain()

    got = receiver.delivered()
    assert [r.type for r in got] == LIFECYCLE
    assert receiver.bad_signatures == []
    for request in got:
        body = request.json
        assert body["story_id"] == story_id and body["survey_id"] == survey.id
        assert body["data"]["story_id"] == story_id
        assert request.headers["cit-event"] == body["type"]
        assert request.headers["cit-event-id"] == body["id"]
        assert request.headers["content-type"] == "application/json"
        text = request.body.decode()
        assert "jane.doe" not in text and "$2,000" not in text and "redacted_text" not in text
        assert verify_signature(
            receiver.secrets["/hook"], request.headers["cit-signature"], request.body
        )
        assert not verify_signature("whsec_wrong", request.headers["cit-signature"], request.body)
    by_type = {r.type: r.json["data"] for r in got}
    assert by_type["coding.saved"]["codes"] == ["complaint"]
    assert by_type["story.final"]["final_codes"] == ["complaint"]
    assert by_type["story.final"]["status"] == "coded"
    suggested = by_type["suggestions.ready"]["suggestions"]
    assert suggested and {"code", "score", "threshold", "suggested"} <= set(suggested[0])
    assert "evidence" not in json.dumps(by_type["suggestions.ready"])

    with db() as session:
        statuses = set(session.scalars(select(WebhookDelivery.status)))
        assert statuses == {"delivered"}
        assert session.scalar(select(func.count()).select_from(Job)) == 0


def test_include_text_sends_the_redacted_text_only(
    app: FastAPI,
    client: TestClient,
    admin: dict[str, str],
    settings: Settings,
    survey: Survey,
    dispatcher: Callable[..., WebhookDispatcher],
    receiver: Receiver,
) -> None:
    _subscribe(client, admin, receiver, "/plain")
    _subscribe(client, admin, receiver, "/text", include_text=True)
    _submit(client, survey)
    _suggest(app, settings)
    dispatcher().drain()
    with_text = {r.type: r.json["data"] for r in receiver.delivered("/text")}
    assert set(with_text) == {"story.received", "story.redacted", "suggestions.ready"}
    assert "redacted_text" not in with_text["story.received"]  # never before redaction
    for event_type in ("story.redacted", "suggestions.ready"):
        text = with_text[event_type]["redacted_text"]["what_happened"]
        assert "$2,000 instead of $200" in text and "jane.doe@example.com" not in text
    assert all("redacted_text" not in r.json["data"] for r in receiver.delivered("/plain"))


def test_a_failed_attempt_is_retried_and_logged(
    client: TestClient,
    admin: dict[str, str],
    survey: Survey,
    dispatcher: Callable[..., WebhookDispatcher],
    receiver: Receiver,
) -> None:
    hook = _subscribe(client, admin, receiver, events=["story.received"])
    receiver.answer = lambda seen, request: 500 if len(seen) < 2 else 204
    _submit(client, survey)
    dispatcher().drain()
    assert [r.status for r in receiver.requests] == [500, 500, 204]
    assert len({r.json["id"] for r in receiver.requests}) == 1  # the same event, three times
    assert len({r.headers["cit-delivery"] for r in receiver.requests}) == 1

    page = client.get(f"/api/v1/webhooks/{hook['id']}/deliveries", headers=admin).json()
    [delivery] = page["items"]
    assert delivery["status"] == "delivered" and delivery["attempts"] == 3
    assert delivery["last_response_code"] == 204 and delivery["last_error"] is None
    detail = client.get(
        f"/api/v1/webhooks/{hook['id']}/deliveries/{delivery['id']}", headers=admin
    ).json()
    log = detail["log"]
    assert [(a["attempt"], a["outcome"], a["response_code"]) for a in log] == [
        (1, "http_error", 500),
        (2, "http_error", 500),
        (3, "delivered", 204),
    ]
    assert log[0]["error"] == "HTTP 500" and log[0]["response_excerpt"] == "x" * 200
    assert all(a["duration_ms"] >= 0 for a in log) and log[2]["response_excerpt"] is None
    with_status = client.get(
        f"/api/v1/webhooks/{hook['id']}/deliveries?status=failed", headers=admin
    ).json()
    assert with_status["items"] == []


def test_backoff_grows_exponentially_with_jitter(hook_settings: Settings) -> None:
    settings = hook_settings.model_copy(
        update={"webhook_backoff_base_seconds": 10.0, "webhook_backoff_max_seconds": 300.0}
    )
    for attempt, ceiling in ((1, 10), (2, 20), (3, 40), (4, 80), (6, 300), (20, 300)):
        delays = [backoff_seconds(attempt, settings) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), attempt
        assert max(delays) - min(delays) > ceiling / 10  # jittered, not one fixed delay


def test_a_storys_next_event_waits_for_the_earlier_one(
    app: FastAPI,
    client: TestClient,
    admin: dict[str, str],
    settings: Settings,
    survey: Survey,
    db: Callable[[], Any],
    dispatcher: Callable[..., WebhookDispatcher],
    receiver: Receiver,
) -> None:
    _subscribe(client, admin, receiver)
    first_story_fails_once: set[str] = set()

    def answer(seen: list[Any], request: Any) -> int:
        # The first story's story.received fails once; everything else is accepted.
        body = request.json
        if (
            body["type"] == "story.received"
            and body["story_id"] == first
            and body["id"] not in first_story_fails_once
        ):
            first_story_fails_once.add(body["id"])
            return 503
        return 200

    receiver.answer = answer
    _submit(client, survey, 2)
    first, second = _story_ids(db, survey)
    _suggest(app, settings)
    hooks = dispatcher(webhook_backoff_base_seconds=3600.0)
    hooks.drain()
    # The first story is stuck behind its failed story.received (retried in an hour); the
    # second story is not held back by it.
    assert [r.type for r in receiver.delivered() if r.json["story_id"] == second] == LIFECYCLE[:3]
    assert [r.json["story_id"] for r in receiver.requests].count(first) == 1
    with db() as session:
        waiting = session.execute(
            select(WebhookEvent.event_type, WebhookDelivery.status)
            .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
            .where(WebhookDelivery.story_id == first)
            .order_by(WebhookEvent.id)
        ).all()
        assert [tuple(w) for w in waiting] == [
            ("story.received", "queued"),
            ("story.redacted", "pending"),
            ("suggestions.ready", "pending"),
        ]
        session.execute(update(Job).where(Job.kind == DELIVER).values(run_after=utcnow()))
    hooks.drain()
    firsts = [r.type for r in receiver.delivered() if r.json["story_id"] == first]
    assert firsts == LIFECYCLE[:3]


def test_a_delivery_is_given_up_after_its_last_attempt_and_the_next_goes(
    app: FastAPI,
    client: TestClient,
    admin: dict[str, str],
    settings: Settings,
    survey: Survey,
    db: Callable[[], Any],
    dispatcher: Callable[..., WebhookDispatcher],
    receiver: Receiver,
) -> None:
    hook = _subscribe(client, admin, receiver, events=["story.received", "story.redacted"])
    receiver.answer = lambda seen, request: 500 if request.json["type"] == "story.received" else 200
    _submit(client, survey)
    _suggest(app, settings)
    dispatcher(webhook_max_attempts=3).drain()
    assert [(r.type, r.status) for r in receiver.requests] == [
        ("story.received", 500),
        ("story.received", 500),
        ("story.received", 500),
        ("story.redacted", 200),
    ]
    failed = client.get(
        f"/api/v1/webhooks/{hook['id']}/deliveries?status=failed", headers=admin
    ).json()["items"]
    assert [(d["event_type"], d["attempts"], d["last_error"]) for d in failed] == [
        ("story.received", 3, "HTTP 500")
    ]
    # A delivery given up does not linger in the job queue.
    with db() as session:
        assert session.scalar(select(func.count()).select_from(Job).where(Job.kind == DELIVER)) == 0


def test_redelivery(
    client: TestClient,
    admin: dict[str, str],
    survey: Survey,
    dispatcher: Callable[..., WebhookDispatcher],
    receiver: Receiver,
) -> None:
    hook = _subscribe(client, admin, receiver, events=["story.received"])
    _submit(client, survey)
    hooks = dispatcher()
    hooks.drain()
    [delivery] = client.get(f"/api/v1/webhooks/{hook['id']}/deliveries", headers=admin).json()[
        "items"
    ]
    url = f"/api/v1/webhooks/{hook['id']}/deliveries/{delivery['id']}/redeliver"
    again = client.post(url, headers=admin)
    assert again.status_code == 200 and again.json()["status"] == "pending"
    busy = client.post(url, headers=admin)
    assert busy.status_code == 409 and busy.headers["content-type"] == PROBLEM
    hooks.drain()
    assert [r.json["id"] for r in receiver.delivered()] == [f"evt_{delivery['event_id']}"] * 2
    log = client.get(
        f"/api/v1/webhooks/{hook['id']}/deliveries/{delivery['id']}", headers=admin
    ).json()["log"]
    assert [a["outcome"] for a in log] == ["delivered", "delivered"]
    missing = client.post(
        f"/api/v1/webhooks/{hook['id']}/deliveries/{delivery['id'] + 99}/redeliver",
        headers=admin,
    )
    assert missing.status_code == 404 and missing.headers["content-type"] == PROBLEM


def test_a_subscriber_that_keeps_failing_is_disabled_and_its_deliveries_wait(
    client: TestClient,
    admin: dict[str, str],
    survey: Survey,
    db: Callable[[], Any],
    dispatcher: Callable[..., WebhookDispatcher],
    receiver: Receiver,
) -> None:
    hook = _subscribe(client, admin, receiver, events=["story.received"])
    down = True
    receiver.answer = lambda seen, request: 500 if down else 200
    _submit(client, survey, 2)
    # One at a time, so that the count is exact (attempts in flight when the third fails would
    # still be recorded, each one more failure).
    hooks = dispatcher(webhook_disable_after=3, webhook_max_attempts=10, webhook_concurrency=1)
    hooks.drain()
    assert len(receiver.requests) == 3  # then no more: the subscription is disabled
    read = client.get(f"/api/v1/webhooks/{hook['id']}", headers=admin).json()
    assert read["active"] is False and read["consecutive_failures"] == 3
    assert "3 consecutive failed" in read["disabled_reason"]
    assert "HTTP 500" in read["disabled_reason"] and read["disabled_at"]
    listed = client.get("/api/v1/webhooks", headers=admin).json()["items"][0]
    assert listed["disabled_reason"] == read["disabled_reason"]
    with db() as session:
        assert set(session.scalars(select(WebhookDelivery.status))) == {"pending"}
    # Nothing new goes to a disabled subscription's queue, and nothing is lost: enabled again
    # (the receiver is back), every waiting delivery goes out.
    _submit(client, survey, 1)
    hooks.drain()
    assert len(receiver.requests) == 3
    down = False
    enabled = client.patch(
        f"/api/v1/webhooks/{hook['id']}", json={"active": True}, headers=admin
    ).json()
    assert enabled["active"] and enabled["disabled_reason"] is None
    assert enabled["consecutive_failures"] == 0
    hooks.drain()
    # Two stories from before; the third arrived while disabled and was not fanned out to it.
    assert len({r.json["id"] for r in receiver.delivered()}) == 2


def test_a_slow_receiver_times_out(
    client: TestClient,
    admin: dict[str, str],
    survey: Survey,
    dispatcher: Callable[..., WebhookDispatcher],
    receiver: Receiver,
) -> None:
    hook = _subscribe(client, admin, receiver, events=["story.received"])
    receiver.pause = lambda n: 1.5 if n == 0 else 0.0
    _submit(client, survey)
    started = time.monotonic()
    dispatcher(webhook_timeout_seconds=0.5).drain()
    assert time.monotonic() - started < 10
    [delivery] = client.get(f"/api/v1/webhooks/{hook['id']}/deliveries", headers=admin).json()[
        "items"
    ]
    log = client.get(
        f"/api/v1/webhooks/{hook['id']}/deliveries/{delivery['id']}", headers=admin
    ).json()["log"]
    assert [a["outcome"] for a in log] == ["timeout", "delivered"]
    assert "Timeout" in log[0]["error"]


def test_model_activation_is_published(
    client: TestClient,
    admin: dict[str, str],
    codebook_id: int,
    db: Callable[[], Any],
    dispatcher: Callable[..., WebhookDispatcher],
    receiver: Receiver,
) -> None:
    _subscribe(client, admin, receiver, events=["model.activated"])
    with db() as session:
        version_id = session.scalar(
            select(CodebookVersion.id).where(CodebookVersion.codebook_id == codebook_id)
        )
        model = NlpModel(
            codebook_id=codebook_id,
            codebook_version_id=version_id,
            path="/nonexistent",
            n_examples=30,
            metrics={},
            trained_by="test",
        )
        session.add(model)
        session.flush()
        codebook = session.get(Codebook, codebook_id)
        assert codebook is not None
        suggestions._make_active(session, codebook, model, None, "test", automatic=True)
        model_id = model.id
    dispatcher().drain()
    [got] = receiver.delivered()
    assert got.type == "model.activated" and got.json["story_id"] is None
    assert got.json["data"] == {
        "model_id": model_id,
        "codebook_id": codebook_id,
        "previous_model_id": None,
        "automatic": True,
    }


def test_deleting_a_subscription_drops_its_deliveries(
    client: TestClient,
    admin: dict[str, str],
    survey: Survey,
    db: Callable[[], Any],
    dispatcher: Callable[..., WebhookDispatcher],
    receiver: Receiver,
) -> None:
    hook = _subscribe(client, admin, receiver, events=["story.received"])
    _submit(client, survey)
    hooks = dispatcher()
    with db() as session:
        from app.webhooks.delivery import fan_out

        fan_out(session)
    assert client.delete(f"/api/v1/webhooks/{hook['id']}", headers=admin).status_code == 204
    hooks.drain()
    assert receiver.requests == []
    with db() as session:
        assert session.scalar(select(func.count()).select_from(WebhookDelivery)) == 0
        assert session.scalar(select(func.count()).select_from(WebhookSubscription)) == 0


def test_signature_header_format() -> None:
    header = signature_header("whsec_test", b'{"a":1}', timestamp=1_700_000_000)
    t, v1 = header.split(",")
    assert t == "t=1700000000" and v1.startswith("v1=") and len(v1) == 3 + 64
    assert verify_signature("whsec_test", header, b'{"a":1}', now=1_700_000_100)
    assert not verify_signature("whsec_test", header, b'{"a":2}', now=1_700_000_100)
    assert not verify_signature("whsec_test", header, b'{"a":1}', now=1_700_001_000)  # replay
    assert not verify_signature("whsec_test", "garbage", b'{"a":1}')


def test_the_readme_verification_snippet_accepts_our_signatures() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    snippet = readme.split("```python\nimport hashlib, hmac, time")[1].split("```")[0]
    namespace: dict[str, Any] = {}
    exec("import hashlib, hmac, time" + snippet, namespace)
    body = b'{"id":"evt_1","type":"story.final"}'
    header = signature_header("whsec_readme", body)
    assert namespace["verify"]("whsec_readme", header, body)
    assert not namespace["verify"]("whsec_other", header, body)
    assert not namespace["verify"]("whsec_readme", header, body + b" ")


def test_the_cit_webhooks_commands(
    settings: Settings,
    survey: Survey,
    client: TestClient,
    db: Callable[[], Any],
    receiver: Receiver,
    dispatcher: Callable[..., WebhookDispatcher],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from app.cli import cli
    from app.config import get_settings

    monkeypatch.setenv("CIT_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("CIT_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("CIT_WEBHOOK_ALLOW_PRIVATE_ADDRESSES", "true")  # a loopback receiver
    # The worker below opens the secrets with the test settings' keys: the same keys here.
    monkeypatch.setenv("CIT_SECRET_KEY", settings.secret_key)
    get_settings.cache_clear()
    try:

        def run(*args: str) -> str:
            result = CliRunner().invoke(cli, ["webhooks", *args])
            assert result.exit_code == 0, result.output
            return result.output

        created = run("create", receiver.url(), "--events", "story.received,story.final")
        secret = created.split("secret (shown once): ")[1].splitlines()[0]
        with db() as session:
            hook = session.scalars(select(WebhookSubscription)).one()
            hook_id = hook.id
            assert service.signing_secret(settings, hook) == secret
        assert secret.startswith("whsec_") and secret not in hook.secret_ciphertext
        listed = run("list")
        assert receiver.url() in listed and "story.received,story.final" in listed
        assert secret not in listed and "active" in listed
        receiver.secrets["/hook"] = secret
        _submit(client, survey)
        dispatcher().drain()
        deliveries = run("deliveries", str(hook_id))
        assert "story.received" in deliveries and "delivered" in deliveries
        with db() as session:
            delivery_id = str(session.scalars(select(WebhookDelivery.id)).one())
        assert f"{delivery_id}\tstory.received" in deliveries
        assert "queued again" in run("redeliver", str(hook_id), delivery_id)
        dispatcher().drain()
        assert len(receiver.delivered()) == 2 and receiver.bad_signatures == []
        assert "DISABLED" in run("update", str(hook_id), "--disable")
        rotated = run("update", str(hook_id), "--enable", "--rotate-secret")
        assert "active" in rotated and "secret (shown once): whsec_" in rotated
        bad = CliRunner().invoke(cli, ["webhooks", "create", "ftp://x", "--events", "story.final"])
        assert bad.exit_code == 1 and "error:" in bad.output
        missing = CliRunner().invoke(cli, ["webhooks", "redeliver", str(hook_id), "999999"])
        assert missing.exit_code == 1 and "no delivery 999999" in missing.output
        assert "deleted" in run("delete", str(hook_id))
        assert receiver.url() not in run("list")
    finally:
        get_settings.cache_clear()


def test_old_closed_deliveries_are_pruned(
    client: TestClient,
    admin: dict[str, str],
    survey: Survey,
    db: Callable[[], Any],
    dispatcher: Callable[..., WebhookDispatcher],
    receiver: Receiver,
) -> None:
    from datetime import timedelta

    from app.webhooks.delivery import prune

    _subscribe(client, admin, receiver, events=["story.received"])
    _submit(client, survey, 2)
    hooks = dispatcher(webhook_backoff_base_seconds=3600.0)
    receiver.answer = lambda seen, request: 200 if not seen else 500
    hooks.drain()  # one delivered, one waiting for its retry
    long_ago = utcnow() - timedelta(days=31)
    with db() as session:
        session.execute(update(WebhookEvent).values(dispatched_at=long_ago))
        assert prune(session, 30) == 1
    with db() as session:
        left = session.execute(select(WebhookDelivery.status, WebhookDelivery.attempts)).all()
        assert [tuple(r) for r in left] == [("queued", 1)]
        assert prune(session, 30) == 0
