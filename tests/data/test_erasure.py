"""Erasure: admins erase a story with a reason; respondents withdraw theirs with a receipt code.
Everything about the story goes in one transaction, a tombstone without text stays, rollups
equal a direct GROUP BY afterwards, and models trained on the story are marked."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.models import (
    AuditEvent,
    Codebook,
    Coding,
    CodingCode,
    Incident,
    IncidentCode,
    Job,
    NlpModel,
    Suggestion,
    Survey,
)
from app.suggestions.service import training_stories
from tests.data.conftest import Person, Review

SECRET_TEXT = "My card 4111 1111 1111 1111 was declined by Ms Quimby at gate 7."


def _confirmed(session: Any, codebook: Any) -> list[str]:
    """The texts of the confirmed stories the next training would learn from."""
    return [s.text for s in training_stories(session, codebook) if s.final and not s.excluded]


def _count(session: Any, model: Any, *where: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def _submit(client: TestClient, survey: Survey, **extra: Any) -> dict[str, Any]:
    body = {"what_happened": SECRET_TEXT, "valence": "dissatisfying", **extra}
    response = client.post(f"/api/v1/public/surveys/{survey.slug}/incidents", json=body)
    assert response.status_code in (200, 201), response.text
    return dict(response.json())


def test_json_receipt_withdraws_the_story_once(
    client: TestClient,
    survey: Survey,
    db: Callable[[], Any],
    assert_rollups_match: Any,
    person: Callable[..., Person],
    admin_person: Person,
) -> None:
    receipt = _submit(client, survey, submission_id="withdraw-me-123")
    code = receipt["receipt_code"]
    assert re.fullmatch(r"[A-Z2-7]{4}(-[A-Z2-7]{4}){3}", code)
    # A retry of the same submission shows the same code and stores nothing new.
    again = _submit(client, survey, submission_id="withdraw-me-123")
    assert again["status"] == "already_received" and again["receipt_code"] == code
    other = _submit(client, survey)
    assert other["receipt_code"] != code
    with db() as session:
        assert _count(session, Incident) == 2
        stored = session.scalar(
            select(Incident).where(Incident.submission_key == "withdraw-me-123")
        )
        assert stored.source == "form" and stored.consent == "not_asked"
        assert code not in (stored.receipt_hash or "")  # only its hash is kept
        incident_id = stored.id
        other_id = session.scalar(select(Incident.id).where(Incident.id != incident_id))

    url = f"/api/v1/public/surveys/{survey.slug}/withdrawals"
    wrong = client.post(url, json={"receipt_code": "AAAA-BBBB-CCCC-DDDD"})
    assert wrong.status_code == 404 and wrong.headers["content-type"].startswith(
        "application/problem+json"
    )
    # Typed in lower case with spaces instead of dashes: the same code.
    done = client.post(url, json={"receipt_code": code.lower().replace("-", " ")})
    assert done.status_code == 200, done.text
    assert client.post(url, json={"receipt_code": code}).status_code == 404
    with db() as session:
        assert session.get(Incident, incident_id) is None
        assert _count(session, Incident) == 1
        tombstone = session.scalar(
            select(AuditEvent).where(
                AuditEvent.entity_id == str(incident_id), AuditEvent.action == "incident.withdraw"
            )
        )
        assert tombstone is not None and tombstone.actor_name == "respondent"
        assert "Quimby" not in str(tombstone.after) and "4111" not in str(tombstone.after)
    assert_rollups_match()
    # In no search, queue or export.
    coder = person()
    found = client.get("/api/v1/incidents", params={"q": "Quimby"}, headers=admin_person.headers)
    assert [i["id"] for i in found.json()["items"]] == [i for i in [other_id] if i]
    handed = client.post("/api/v1/review/next", headers=coder.headers)
    assert handed.status_code == 200 and handed.json()["incident"]["id"] == other_id
    exported = client.get(
        f"/api/v1/surveys/{survey.id}/export",
        params={"format": "jsonl"},
        headers=admin_person.headers,
    )
    assert [line["id"] for line in map(json.loads, exported.text.splitlines())] == [other_id]


def test_form_thanks_page_shows_the_receipt_and_the_withdraw_page_uses_it(
    client: TestClient, survey: Survey, db: Callable[[], Any]
) -> None:
    form = client.get(f"/s/{survey.slug}")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
    response = client.post(
        f"/s/{survey.slug}",
        data={"what_happened": SECRET_TEXT, "valence": "satisfying", "csrf_token": token},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert "receipt" not in response.headers["location"]  # not in the URL (history, logs)
    thanks = client.get(response.headers["location"])
    code = re.search(r"<strong>([A-Z2-7-]{19})</strong>", thanks.text).group(1)  # type: ignore[union-attr]
    assert f"/s/{survey.slug}/withdraw" in thanks.text
    assert SECRET_TEXT not in thanks.text

    page = client.get(f"/s/{survey.slug}/withdraw")
    assert page.status_code == 200
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    bad = client.post(
        f"/s/{survey.slug}/withdraw", data={"receipt": "ZZZZ-ZZZZ-ZZZZ-ZZZZ", "csrf_token": token}
    )
    assert bad.status_code == 404 and "ZZZZ-ZZZZ-ZZZZ-ZZZZ" in bad.text  # typed code kept
    no_csrf = client.post(f"/s/{survey.slug}/withdraw", data={"receipt": code})
    assert no_csrf.status_code == 400
    with db() as session:
        assert _count(session, Incident) == 1
    ok = client.post(f"/s/{survey.slug}/withdraw", data={"receipt": code, "csrf_token": token})
    assert ok.status_code == 200, ok.text
    assert SECRET_TEXT not in ok.text
    with db() as session:
        assert _count(session, Incident) == 0


def test_admin_erasure_removes_everything_and_keeps_a_tombstone(
    client: TestClient,
    survey: Survey,
    review: Review,
    person: Callable[..., Person],
    admin_person: Person,
    make_story: Callable[..., int],
    db: Callable[[], Any],
    assert_rollups_match: Any,
) -> None:
    coder = person()
    keep = make_story(survey, what_happened="The agent found my bag.", suggested=("extra_mile",))
    gone = make_story(survey, what_happened=SECRET_TEXT, suggested=("complaint",))
    review.code(coder, keep, ["extra_mile"])
    review.code(coder, gone, ["complaint"], note="She was called Quimby, see the story")
    with db() as session:
        codebook = session.get(Codebook, survey.codebook_id)
        # A model trained after the story was confirmed, and an older one trained before.
        version_id = session.scalar(select(IncidentCode.codebook_version_id).limit(1))
        confirmed_at = session.scalar(
            select(IncidentCode.confirmed_at).where(IncidentCode.incident_id == gone)
        )
        from datetime import timedelta

        for label, at in (("before", confirmed_at - timedelta(days=1)), ("after", confirmed_at)):
            session.add(
                NlpModel(
                    codebook_id=codebook.id,
                    codebook_version_id=version_id,
                    path=f"/tmp/model-{label}",
                    n_examples=2,
                    metrics={},
                    active=False,
                    trained_by=label,
                    created_at=at,
                )
            )
        assert len(_confirmed(session, codebook)) == 2
    assert_rollups_match()

    url = f"/api/v1/incidents/{gone}"
    assert client.delete(url, headers=admin_person.headers).status_code == 422  # no reason
    assert client.delete(url, params={"reason": "x"}, headers=coder.headers).status_code == 403
    response = client.delete(
        url, params={"reason": "respondent asked by e-mail"}, headers=admin_person.headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["models_marked"] == 1
    assert client.get(url, headers=admin_person.headers).status_code == 404
    again = client.delete(url, params={"reason": "again"}, headers=admin_person.headers)
    assert again.status_code == 404

    with db() as session:
        for model, column in (
            (Suggestion, Suggestion.incident_id),
            (Coding, Coding.incident_id),
            (IncidentCode, IncidentCode.incident_id),
        ):
            assert _count(session, model, column == gone) == 0, model
        assert _count(session, Job, Job.subject == f"incident:{gone}") == 0
        assert _count(session, CodingCode) == 1  # the other story's decision only
        marked = {m.trained_by: m.erased_stories for m in session.scalars(select(NlpModel))}
        assert marked == {"before": 0, "after": 1}
        # The next training cannot see the story: only the other one is left.
        # (Training reads every decision coders made; the confirmed stories among them.)
        examples = _confirmed(session, session.get(Codebook, survey.codebook_id))
        assert len(examples) == 1 and "Quimby" not in examples[0]
        events = list(session.scalars(select(AuditEvent).where(AuditEvent.entity_id == str(gone))))
        assert any(e.action == "incident.erase" for e in events)
        trail = " ".join(f"{e.before} {e.after}" for e in events)
        assert "Quimby" not in trail and "4111" not in trail
        erase = next(e for e in events if e.action == "incident.erase")
        assert erase.after["reason"] == "respondent asked by e-mail"
        assert erase.actor_name == "the-admin"
    listed = client.get("/api/v1/nlp/models", headers=admin_person.headers).json()
    assert {m["trained_by"]: m["erased_stories"] for m in listed} == {"before": 0, "after": 1}
    assert next(m for m in listed if m["trained_by"] == "after")["last_erasure_at"]
    # The other story is untouched and the reports equal a direct GROUP BY.
    assert client.get(f"/api/v1/incidents/{keep}", headers=admin_person.headers).status_code == 200
    assert_rollups_match()
