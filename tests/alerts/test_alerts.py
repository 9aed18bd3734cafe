"""Alert rules: fired by the worker's fold when a code's share rises significantly (the trends
report's two-proportion test) or crosses a threshold, once per rule and period; figures of a
suppressed cell shown to admins only; the API's roles."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.alerts.service import fold_and_evaluate
from app.config import Settings
from app.models import (
    Alert,
    Codebook,
    CodebookVersion,
    Incident,
    IncidentCode,
    Survey,
    WebhookEvent,
)

_serial = itertools.count(1)


def add_month(
    db: Callable[[], Any],
    survey_id: int,
    month: int,
    *,
    stories: int,
    complaints: int,
    touchpoint: str | None = None,
) -> None:
    """Confirmed dissatisfying stories in 2025-`month`, `complaints` of them coded complaint."""
    with db() as session:
        version = session.scalar(select(CodebookVersion.id).limit(1))
        if version is None:
            book = Codebook(key="alerts", name="Alerts")
            session.add(book)
            session.flush()
            row = CodebookVersion(
                codebook_id=book.id, number=1, content={"codes": []}, created_by="admin"
            )
            session.add(row)
            session.flush()
            version = row.id
        for i in range(stories):
            moment = datetime(2025, month, 1 + i % 28, 10, tzinfo=UTC)
            story = Incident(
                survey_id=survey_id,
                submission_key=f"alert-{next(_serial)}",
                what_happened="A story.",
                valence="dissatisfying",
                touchpoint=touchpoint,
                language="en",
                attributes={},
                redacted={},
                redaction_spans={},
                submitted_at=moment,
                status="coded",
                finalized_at=moment,
            )
            session.add(story)
            session.flush()
            session.add(
                IncidentCode(
                    incident_id=story.id,
                    code="complaint" if i < complaints else "extra_mile",
                    codebook_version_id=version,
                    source="review",
                    confirmed_by="coder",
                )
            )


def fold(db: Callable[[], Any], settings: Settings) -> int:
    with db() as session:
        return fold_and_evaluate(session, settings)[1]


RISE = {
    "name": "Complaints rising",
    "code": "complaint",
    "trigger": "rise",
    "period": "month",
    "min_base": 20,
}


@pytest.fixture
def survey(make_survey: Callable[..., Survey]) -> Survey:
    return make_survey(title="Alerts")


def test_a_significant_rise_fires_once_per_period(
    client: TestClient,
    survey: Survey,
    admin: dict[str, str],
    db: Callable[[], Any],
    settings: Settings,
) -> None:
    created = client.post(
        "/api/v1/alert-rules", json={**RISE, "survey_id": survey.id}, headers=admin
    )
    assert created.status_code == 201, created.text
    add_month(db, survey.id, 1, stories=40, complaints=8)
    assert fold(db, settings) == 0  # no previous period to compare with
    add_month(db, survey.id, 2, stories=40, complaints=9)
    assert fold(db, settings) == 0  # 20% -> 22.5%: no significant rise
    add_month(db, survey.id, 3, stories=40, complaints=24)
    assert fold(db, settings) == 1  # 22.5% -> 60%
    alerts = client.get("/api/v1/alerts", headers=admin).json()["items"]
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert["period_start"] == "2025-03-01" and alert["reason"] == "rise"
    assert (alert["count"], alert["base"], alert["previous_count"]) == (24, 40, 9)
    assert alert["share"] == pytest.approx(0.6) and alert["p_value"] < 0.05
    assert alert["suppressed"] is False
    with db() as session:  # alert.fired, in the outbox for webhook subscribers
        (event,) = session.scalars(
            select(WebhookEvent).where(WebhookEvent.event_type == "alert.fired")
        ).all()
        assert event.payload["alert_id"] == alert["id"] and event.payload["count"] == 24
        assert event.survey_id == survey.id
    # More stories in March: re-evaluated, but the rule fired for March already.
    add_month(db, survey.id, 3, stories=5, complaints=5)
    assert fold(db, settings) == 0
    with db() as session:
        assert session.scalar(select(func.count()).select_from(Alert)) == 1


def test_a_fall_rule_ignores_a_rise_and_min_base_holds(
    client: TestClient,
    survey: Survey,
    admin: dict[str, str],
    db: Callable[[], Any],
    settings: Settings,
) -> None:
    for trigger, min_base in (("fall", 20), ("rise", 50)):
        body = {**RISE, "survey_id": survey.id, "trigger": trigger, "min_base": min_base}
        assert client.post("/api/v1/alert-rules", json=body, headers=admin).status_code == 201
    add_month(db, survey.id, 1, stories=40, complaints=8)
    add_month(db, survey.id, 2, stories=40, complaints=24)
    assert fold(db, settings) == 0


def test_a_threshold_on_a_small_group_is_suppressed_for_viewers(
    client: TestClient,
    survey: Survey,
    admin: dict[str, str],
    token_for: Callable[..., dict[str, str]],
    db: Callable[[], Any],
    settings: Settings,
) -> None:
    body = {
        "survey_id": survey.id,
        "name": "On board complaints",
        "code": "complaint",
        "group_field": "touchpoint",
        "group_value": "On board",
        "trigger": "above",
        "threshold": 0.5,
        "min_base": 1,
    }
    assert client.post("/api/v1/alert-rules", json=body, headers=admin).status_code == 201
    add_month(db, survey.id, 1, stories=30, complaints=3, touchpoint="Check-in")
    add_month(db, survey.id, 1, stories=3, complaints=3, touchpoint="On board")
    assert fold(db, settings) == 1
    shown_to_admin = client.get("/api/v1/alerts", headers=admin).json()["items"][0]
    assert shown_to_admin["suppressed"] is True and shown_to_admin["count"] == 3
    with db() as session:  # a subscriber is not necessarily an admin: no hidden figures
        (event,) = session.scalars(
            select(WebhookEvent).where(WebhookEvent.event_type == "alert.fired")
        ).all()
        assert event.payload["suppressed"] is True
        assert not {"count", "base", "share", "p_value"} & set(event.payload)
    for role in ("viewer", "researcher"):
        seen = client.get("/api/v1/alerts", headers=token_for(role)).json()["items"][0]
        assert seen["suppressed"] is True and seen["reason"] == "above"
        assert [seen[k] for k in ("count", "base", "share", "p_value")] == [None] * 4
        page = client.get("/work/alerts", headers=token_for(role))
        assert page.status_code == 200 and "suppressed" in page.text and "3 / 3" not in page.text


def test_rules_api_validates_and_checks_roles(
    client: TestClient, survey: Survey, token_for: Callable[..., dict[str, str]]
) -> None:
    viewer, researcher = token_for("viewer"), token_for("researcher")
    body = {**RISE, "survey_id": survey.id}
    assert client.post("/api/v1/alert-rules", json=body, headers=viewer).status_code == 403
    assert (
        client.post("/api/v1/alert-rules", json=body, headers=token_for("case_manager")).status_code
        == 403
    )
    made = client.post("/api/v1/alert-rules", json=body, headers=researcher)
    assert made.status_code == 201
    rule_id = made.json()["id"]
    assert client.get("/api/v1/alert-rules", headers=viewer).json()[0]["id"] == rule_id
    assert client.get("/api/v1/alerts", headers=viewer).status_code == 200
    bad = [
        {**body, "trigger": "above"},  # no threshold
        {**body, "measure": "count"},  # a test on counts
        {**body, "group_field": "touchpoint"},  # no group value
        {**body, "period": "day"},
    ]
    for payload in bad:
        assert (
            client.post("/api/v1/alert-rules", json=payload, headers=researcher).status_code == 422
        )
    missing = client.post(
        "/api/v1/alert-rules", json={**body, "survey_id": 999}, headers=researcher
    )
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    off = client.patch(
        f"/api/v1/alert-rules/{rule_id}", json={"enabled": False}, headers=researcher
    )
    assert off.json()["enabled"] is False
    assert client.delete(f"/api/v1/alert-rules/{rule_id}", headers=researcher).status_code == 204


def test_a_disabled_rule_does_not_fire(
    client: TestClient,
    survey: Survey,
    admin: dict[str, str],
    db: Callable[[], Any],
    settings: Settings,
) -> None:
    body = {**RISE, "survey_id": survey.id, "enabled": False}
    assert client.post("/api/v1/alert-rules", json=body, headers=admin).status_code == 201
    add_month(db, survey.id, 1, stories=40, complaints=8)
    add_month(db, survey.id, 2, stories=40, complaints=24)
    assert fold(db, settings) == 0


def test_the_alerts_page_adds_a_rule_from_form_text(
    client: TestClient, survey: Survey, admin: dict[str, str]
) -> None:
    form = {"survey_id": str(survey.id), "name": "Complaints", "code": "complaint"}
    response = client.post(
        "/work/alerts", headers=admin, data={**form, "min_base": "25"}, follow_redirects=False
    )
    assert response.status_code in (200, 303), response.text
    (rule,) = client.get("/api/v1/alert-rules", headers=admin).json()
    assert (rule["survey_id"], rule["min_base"]) == (survey.id, 25)
