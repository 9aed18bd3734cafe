"""The contact field (form and JSON), its encryption, who may see it (admins and case managers
only: never researchers, viewers, exports, REFI-QDA or the logs), cases opened by the worker,
their status and notes in the audit trail, and erasure taking contact and case along."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.cases import crypto
from app.cases.service import open_due_cases, rotate_keys, summary
from app.config import Settings
from app.errors import Invalid
from app.models import (
    AuditEvent,
    Case,
    CaseNote,
    Codebook,
    CodebookVersion,
    Incident,
    IncidentCode,
    IncidentContact,
    Survey,
)

EMAIL = "rescue.me@example.org"
PHONE = "+49 30 1234567"
QUESTION = "May we contact you about this?"
ROLES = ("admin", "researcher", "viewer", "case_manager")


def _submit(client: TestClient, slug: str, **fields: Any) -> Any:
    body = {"what_happened": "They sent $2,000 instead of $200.", "valence": "dissatisfying"}
    return client.post(f"/api/v1/public/surveys/{slug}/incidents", json={**body, **fields})


@pytest.fixture
def survey(make_survey: Callable[..., Survey]) -> Survey:
    return make_survey(title="Bank", contact_question=QUESTION)


def test_json_intake_stores_the_contact_encrypted_and_only_when_given(
    client: TestClient, survey: Survey, db: Callable[[], Any], settings: Settings
) -> None:
    assert _submit(client, survey.slug, contact_ok=True, contact=EMAIL).status_code == 201
    assert _submit(client, survey.slug, contact_ok=True, contact=PHONE).status_code == 201
    assert _submit(client, survey.slug, contact=EMAIL).status_code == 201  # not ticked
    assert _submit(client, survey.slug).status_code == 201
    with db() as session:
        rows = session.scalars(select(IncidentContact).order_by(IncidentContact.incident_id)).all()
        assert [r.kind for r in rows] == ["email", "phone"]
        assert all(EMAIL not in r.ciphertext and "1234567" not in r.ciphertext for r in rows)
        assert crypto.decrypt(settings, rows[0].ciphertext) == EMAIL
        assert session.scalar(select(func.count()).select_from(Incident)) == 4
        # The story's own columns do not carry it either.
        stories = session.scalars(select(Incident)).all()
        assert not any(EMAIL in str(s.attributes) + str(s.redacted) for s in stories)


@pytest.mark.parametrize("typed", ["not-an-address", "12", "a@b"])
def test_json_intake_refuses_an_invalid_contact(
    client: TestClient, survey: Survey, typed: str
) -> None:
    response = _submit(client, survey.slug, contact_ok=True, contact=typed)
    assert response.status_code == 422
    assert "contact" in response.text
    assert _submit(client, survey.slug, contact_ok=True).status_code == 422  # ticked, empty


def test_a_survey_that_does_not_ask_stores_no_contact(
    client: TestClient, make_survey: Callable[..., Survey], db: Callable[[], Any]
) -> None:
    plain = make_survey(title="Plain")
    assert _submit(client, plain.slug, contact_ok=True, contact=EMAIL).status_code == 201
    with db() as session:
        assert session.scalar(select(func.count()).select_from(IncidentContact)) == 0


def _form(client: TestClient, slug: str) -> dict[str, str]:
    page = client.get(f"/s/{slug}")
    assert QUESTION in page.text and 'name="contact"' in page.text
    found = dict(re.findall(r'name="(csrf_token|submission_id)" value="([^"]*)"', page.text))
    return found


def test_form_keeps_every_word_when_the_contact_is_invalid(
    client: TestClient, survey: Survey, db: Callable[[], Any]
) -> None:
    hidden = _form(client, survey.slug)
    typed = {
        "occurred": "last Tuesday",
        "circumstances": "I was paying my rent",
        "what_happened": "The app sent 2000 instead of 200 & had no undo",
        "outcome": "The agent reversed it",
        "valence": "dissatisfying",
        "contact_ok": "yes",
        "contact": "call me maybe",
    }
    again = client.post(f"/s/{survey.slug}", data={**hidden, **typed})
    assert again.status_code == 422
    for value in typed.values():
        if value != "yes":
            assert value.replace("&", "&amp;") in again.text
    assert 'id="contact-error"' in again.text and "checked" in again.text
    stored = client.post(
        f"/s/{survey.slug}", data={**hidden, **typed, "contact": EMAIL}, follow_redirects=False
    )
    assert stored.status_code == 303
    with db() as session:
        assert session.scalar(select(func.count()).select_from(IncidentContact)) == 1


def _story_with_contact(client: TestClient, slug: str, **fields: Any) -> int:
    response = _submit(client, slug, contact_ok=True, contact=EMAIL, **fields)
    assert response.status_code == 201
    return int(response.json().get("incident_id") or 0)


def _cases(db: Callable[[], Any]) -> list[tuple[int, str]]:
    with db() as session:
        open_due_cases(session)
    with db() as session:
        return [(c.incident_id, c.status) for c in session.scalars(select(Case).order_by(Case.id))]


def test_worker_opens_a_case_for_dissatisfying_stories_with_a_contact(
    client: TestClient, survey: Survey, db: Callable[[], Any]
) -> None:
    _submit(client, survey.slug, contact_ok=True, contact=EMAIL)
    _submit(client, survey.slug, contact_ok=True, contact=PHONE, valence="satisfying")
    _submit(client, survey.slug)
    cases = _cases(db)
    assert len(cases) == 1 and cases[0][1] == "open"
    assert _cases(db) == cases  # once


def _code(db: Callable[[], Any], incident_id: int, code: str) -> None:
    with db() as session:
        book = Codebook(key=f"b{incident_id}", name="b")
        session.add(book)
        session.flush()
        version = CodebookVersion(
            codebook_id=book.id, number=1, content={"codes": []}, created_by="admin"
        )
        session.add(version)
        session.flush()
        session.get(Incident, incident_id).status = "coded"  # type: ignore[union-attr]
        session.add(
            IncidentCode(
                incident_id=incident_id,
                code=code,
                codebook_version_id=version.id,
                source="review",
                confirmed_by="coder",
            )
        )


def test_case_codes_wait_for_the_final_codes(
    client: TestClient, make_survey: Callable[..., Survey], db: Callable[[], Any]
) -> None:
    chosen = make_survey(title="Chosen", contact_question=QUESTION, case_codes=["owner_error"])
    _submit(client, chosen.slug, contact_ok=True, contact=EMAIL)
    _submit(client, chosen.slug, contact_ok=True, contact=PHONE)
    assert _cases(db) == []
    with db() as session:
        first, second = session.scalars(select(Incident.id).order_by(Incident.id)).all()
    _code(db, first, "complaint")
    _code(db, second, "owner_error")
    assert _cases(db) == [(second, "open")]


@pytest.fixture
def case_id(client: TestClient, survey: Survey, db: Callable[[], Any]) -> int:
    _submit(client, survey.slug, contact_ok=True, contact=EMAIL)
    with db() as session:
        return open_due_cases(session)[0]


@pytest.mark.parametrize("role", ROLES)
def test_authorization_matrix_of_cases(
    role: str, case_id: int, client: TestClient, token_for: Callable[..., dict[str, str]]
) -> None:
    headers = token_for(role)
    allowed = role in ("admin", "case_manager")
    calls = [
        client.get("/api/v1/cases", headers=headers),
        client.get("/api/v1/cases/summary", headers=headers),
        client.get(f"/api/v1/cases/{case_id}", headers=headers),
        client.patch(f"/api/v1/cases/{case_id}", json={"status": "contacted"}, headers=headers),
        client.post(f"/api/v1/cases/{case_id}/notes", json={"body": "rang"}, headers=headers),
        client.get("/work/cases", headers=headers),
    ]
    for response in calls:
        assert response.status_code in ((200, 201) if allowed else (403,)), response.text
        if not allowed and response.request.url.path.startswith("/api"):
            assert response.headers["content-type"].startswith("application/problem+json")
    # Only reading one case shows the contact; nothing shows it to researchers or viewers.
    assert [EMAIL in r.text for r in calls] == [False, False, allowed, False, False, False]


def test_case_status_and_notes_are_in_the_audit_trail(
    case_id: int,
    client: TestClient,
    token_for: Callable[..., dict[str, str]],
    db: Callable[[], Any],
) -> None:
    manager = token_for("case_manager", name="maria")
    read = client.get(f"/api/v1/cases/{case_id}", headers=manager).json()
    assert read["contact"] == {"kind": "email", "value": EMAIL} and read["status"] == "open"
    note = "Undid the transfer; customer kept."
    assert (
        client.post(
            f"/api/v1/cases/{case_id}/notes", json={"body": note}, headers=manager
        ).status_code
        == 201
    )
    for status in ("contacted", "resolved"):
        moved = client.patch(f"/api/v1/cases/{case_id}", json={"status": status}, headers=manager)
        assert moved.json()["status"] == status and moved.json()["updated_by"] == "maria"
    stale = client.patch(
        f"/api/v1/cases/{case_id}?version=1", json={"status": "open"}, headers=manager
    )
    assert stale.status_code == 409
    listed = client.get("/api/v1/cases?status=resolved", headers=manager).json()
    assert [c["id"] for c in listed["items"]] == [case_id]
    assert listed["items"][0]["contact"] is None  # lists never carry contacts
    assert client.get("/api/v1/cases?status=open", headers=manager).json()["items"] == []
    with db() as session:
        events = session.execute(
            select(AuditEvent.action, AuditEvent.actor_name).order_by(AuditEvent.id)
        ).all()
        trail = [e for e in events if e[0].startswith(("case.", "contact."))]
        assert trail == [
            ("case.open", "worker"),
            ("contact.read", "maria"),
            ("case.note", "maria"),
            ("case.status", "maria"),
            ("case.status", "maria"),
        ]
        texts = " ".join(str(e) for e in session.execute(select(AuditEvent.after)).scalars())
        assert EMAIL not in texts and note not in texts
        result = summary(session)
    assert (result.open, result.contacted, result.resolved) == (0, 0, 1)
    assert result.median_hours_to_resolution is not None
    assert 0 <= result.median_hours_to_resolution < 1


def test_researchers_viewers_and_exports_never_see_contacts(
    case_id: int,
    client: TestClient,
    token_for: Callable[..., dict[str, str]],
    survey: Survey,
    admin: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    researcher, viewer = token_for("researcher"), token_for("viewer")
    for headers in (researcher, viewer, admin):
        for path in ("/api/v1/incidents", f"/api/v1/surveys/{survey.id}"):
            response = client.get(path, headers=headers)
            assert EMAIL not in response.text
    for fmt in ("csv", "jsonl", "xlsx", "qdpx"):
        for headers in (researcher, admin):
            export = client.get(f"/api/v1/surveys/{survey.id}/export?format={fmt}", headers=headers)
            assert export.status_code == 200, export.text
            assert EMAIL.encode() not in export.content
    # The admin's reading of the case shows it, and no log line does.
    assert EMAIL in client.get(f"/api/v1/cases/{case_id}", headers=admin).text
    assert EMAIL not in caplog.text and "1234567" not in caplog.text


def test_erasure_takes_contact_case_and_notes_along(
    case_id: int, client: TestClient, admin: dict[str, str], db: Callable[[], Any]
) -> None:
    client.post(f"/api/v1/cases/{case_id}/notes", json={"body": "called"}, headers=admin)
    with db() as session:
        incident_id = session.get(Case, case_id).incident_id  # type: ignore[union-attr]
    erased = client.delete(f"/api/v1/incidents/{incident_id}?reason=asked", headers=admin)
    assert erased.status_code in (200, 204), erased.text
    with db() as session:
        for model in (IncidentContact, Case, CaseNote):
            assert session.scalar(select(func.count()).select_from(model)) == 0


def test_contact_keys_rotate(settings: Settings) -> None:
    old = crypto.new_key()
    first = settings.model_copy(update={"contact_keys": old})
    token = crypto.encrypt(first, EMAIL)
    new = crypto.new_key()
    rotated = settings.model_copy(update={"contact_keys": f"{new},{old}"})
    assert crypto.decrypt(rotated, token) == EMAIL
    fresh = crypto.rotate(rotated, token)
    only_new = settings.model_copy(update={"contact_keys": new})
    assert crypto.decrypt(only_new, fresh) == EMAIL
    assert crypto.decrypt(only_new, token) is None


def test_contact_keys_replace_the_derived_key_by_the_usual_rotation(
    settings: Settings, db: Callable[[], Any], client: TestClient, survey: Survey
) -> None:
    """Stored under the key derived from CIT_SECRET_KEY; then CIT_CONTACT_KEYS is set: the
    derived key still opens, `rotate_keys` moves every contact to the new key, all or nothing."""
    derived = settings.model_copy(update={"contact_keys": ""})
    _submit(client, survey.slug, contact_ok=True, contact=EMAIL)
    new = crypto.new_key()
    own = settings.model_copy(update={"contact_keys": new})
    elsewhere = own.model_copy(update={"secret_key": "another-secret-key-0123"})
    with db() as session:
        row = session.scalars(select(IncidentContact)).one()
        assert crypto.decrypt(derived, row.ciphertext) == EMAIL
        assert crypto.decrypt(own, row.ciphertext) == EMAIL  # the derived key, last
        assert crypto.decrypt(elsewhere, row.ciphertext) is None
        stored, incident_id = row.ciphertext, row.incident_id
    with db() as session, pytest.raises(Invalid) as refused:
        rotate_keys(session, elsewhere.model_copy(update={"contact_keys": crypto.new_key()}))
    assert (
        f"story(ies) {incident_id};" in refused.value.detail and EMAIL not in refused.value.detail
    )
    with db() as session:
        assert session.get(IncidentContact, incident_id).ciphertext == stored  # type: ignore[union-attr]
        assert rotate_keys(session, own) == 1
    with db() as session:
        row = session.get(IncidentContact, incident_id)
        assert row is not None and crypto.decrypt(elsewhere, row.ciphertext) == EMAIL


def test_the_worker_round_opens_cases_and_evaluates_alerts(
    client: TestClient, survey: Survey, app: Any, settings: Settings, db: Callable[[], Any]
) -> None:
    from app.suggestions.worker import Worker

    _submit(client, survey.slug, contact_ok=True, contact=EMAIL)
    worker = Worker(app.state.sessionmaker, settings, name="cases-test")
    assert worker.fold_rollups() >= 1  # the new story's rollup deltas
    with db() as session:
        assert session.scalar(select(func.count()).select_from(Case)) == 1
        assert session.scalar(select(func.count()).select_from(Incident)) == 1


def test_a_case_manager_lands_on_the_cases_page(
    client: TestClient, token_for: Callable[..., dict[str, str]]
) -> None:
    home = client.get("/work", headers=token_for("case_manager"), follow_redirects=False)
    assert home.status_code == 303 and home.headers["location"] == "/work/cases"
    page = client.get("/work/cases", headers=token_for("case_manager"))
    assert page.status_code == 200 and 'href="/work/cases"' in page.text
    assert ">Queue<" not in page.text  # no coding queue in their menu


def test_a_form_sent_back_while_the_database_is_away_keeps_the_contact_field() -> None:
    from types import SimpleNamespace

    from app.surveys.pages import _remembered_survey

    request = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(survey_cache={})))
    typed = {"what_happened": "x", "contact_ok": "yes", "contact": EMAIL}
    stand_in = _remembered_survey(request, "never-seen", typed)  # type: ignore[arg-type]
    assert stand_in.contact_question == QUESTION
    assert (
        _remembered_survey(request, "never-seen", {"what_happened": "x"}).contact_question is None
    )  # type: ignore[arg-type]


def test_a_case_manager_reads_the_story_redacted_with_the_case(
    survey: Survey,
    client: TestClient,
    token_for: Callable[..., dict[str, str]],
    db: Callable[[], Any],
) -> None:
    """Following up needs what happened: one case's read (API and page) carries the story as
    researchers read it, personal data in the text redacted; lists do not carry it."""
    story = "They sent $2,000 instead of $200. Write to anna.berg@example.com, please."
    _submit(client, survey.slug, contact_ok=True, contact=EMAIL, what_happened=story)
    ((case_id, _status),) = _cases(db)
    manager = token_for("case_manager", name="maria")
    read = client.get(f"/api/v1/cases/{case_id}", headers=manager).json()
    told = read["story"]
    assert told["valence"] == "dissatisfying" and told["redaction_pending"] is False
    assert told["what_happened"].startswith("They sent $2,000 instead of $200.")
    assert "anna.berg@example.com" not in told["what_happened"]
    assert "[EMAIL]" in told["what_happened"]
    listed = client.get("/api/v1/cases", headers=manager).json()["items"]
    assert listed[0]["story"] is None
    page = client.get(f"/work/cases?case={case_id}", headers=manager)
    assert page.status_code == 200 and 'id="case-story"' in page.text
    assert "instead of $200" in page.text and "anna.berg@example.com" not in page.text
