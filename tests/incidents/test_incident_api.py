"""JSON submission for custom front ends, and reading stories through the API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from app.models import Survey

PROBLEM = "application/problem+json"
STORY = {
    "what_happened": "They charged me twice for one ticket.",
    "valence": "dissatisfying",
    "circumstances": "Booking online.",
    "channel": "Phone",
}


def _submit(client: TestClient, slug: str, body: dict[str, Any], **kw: Any) -> Any:
    return client.post(f"/api/v1/public/surveys/{slug}/incidents", json=body, **kw)


def test_public_survey_definition(client: TestClient, make_survey: Callable[..., Survey]) -> None:
    survey = make_survey()
    data = client.get(f"/api/v1/public/surveys/{survey.slug}").json()
    assert data["touchpoints"] == ["Check-in", "On board"]
    assert "what_happened" in data["questions"] and "id" not in data
    assert client.get("/api/v1/public/surveys/nope").status_code == 404


def test_json_submission_and_reading(
    client: TestClient, make_survey: Callable[..., Survey], token_for: Callable[..., dict[str, str]]
) -> None:
    survey = make_survey()
    response = _submit(client, survey.slug, {**STORY, "submission_id": "abcdefgh-1"})
    assert response.status_code == 201
    assert response.json()["status"] == "received" and "id" not in response.json()
    again = _submit(client, survey.slug, {**STORY, "submission_id": "abcdefgh-1"})
    assert again.status_code == 200 and again.json()["status"] == "already_received"
    keyed = _submit(client, survey.slug, STORY, headers={"Idempotency-Key": "key-12345678"})
    assert keyed.status_code == 201
    assert (
        _submit(client, survey.slug, STORY, headers={"Idempotency-Key": "key-12345678"}).status_code
        == 200
    )

    researcher = token_for("researcher")
    page = client.get("/api/v1/incidents?limit=1", headers=researcher).json()
    assert len(page["items"]) == 1 and page["next_cursor"]
    second = client.get(
        "/api/v1/incidents", params={"cursor": page["next_cursor"]}, headers=researcher
    ).json()
    assert len(second["items"]) == 1 and second["next_cursor"] is None
    story = client.get(f"/api/v1/incidents/{page['items'][0]['id']}", headers=researcher).json()
    assert story["what_happened"] == STORY["what_happened"]
    assert story["channel"] == "Phone" and story["survey_id"] == survey.id
    by_survey = client.get(
        f"/api/v1/incidents?survey_id={survey.id + 1000}", headers=researcher
    ).json()
    assert by_survey["items"] == []
    missing = client.get("/api/v1/incidents/999999", headers=researcher)
    assert missing.status_code == 404 and missing.headers["content-type"] == PROBLEM
    bad_cursor = client.get("/api/v1/incidents?cursor=zzz", headers=researcher)
    assert bad_cursor.status_code == 400 and bad_cursor.headers["content-type"] == PROBLEM


def test_json_submission_errors(
    client: TestClient, make_survey: Callable[..., Survey], settings: Any
) -> None:
    survey = make_survey(consent_text="ok?")
    unknown = _submit(client, survey.slug, {**STORY, "consent": True, "age": 3})
    assert unknown.status_code == 422 and unknown.headers["content-type"] == PROBLEM
    assert ["body", "age"] in [e["loc"] for e in unknown.json()["errors"]]
    wrong_type = _submit(client, survey.slug, {**STORY, "consent": True, "valence": 5})
    assert wrong_type.status_code == 422
    rules = _submit(
        client,
        survey.slug,
        {
            **STORY,
            "what_happened": "   ",
            "channel": "Fax",
            "outcome": "z" * (settings.max_answer_chars + 1),
        },
    )
    assert rules.status_code == 422
    fields = {e["loc"][1]: e["type"] for e in rules.json()["errors"]}
    assert fields == {
        "what_happened": "story_required",
        "channel": "invalid_choice",
        "outcome": "too_long",
        "consent": "consent_required",
    }
    not_json = client.post(
        f"/api/v1/public/surveys/{survey.slug}/incidents",
        content=b"{oops",
        headers={"content-type": "application/json"},
    )
    assert not_json.status_code == 422 and not_json.headers["content-type"] == PROBLEM


def test_json_submission_with_invitation(
    client: TestClient, make_survey: Callable[..., Survey], admin: dict[str, str]
) -> None:
    survey = make_survey()
    link = client.post(
        f"/api/v1/surveys/{survey.id}/invitations", headers=admin, json={"count": 1}
    ).json()[0]["link"]
    token = link.rsplit("/", 1)[1]
    assert _submit(client, survey.slug, {**STORY, "invitation": token}).status_code == 201
    used = _submit(client, survey.slug, {**STORY, "invitation": token})
    assert used.status_code == 409 and used.headers["content-type"] == PROBLEM
    assert _submit(client, survey.slug, {**STORY, "invitation": "bogus"}).status_code == 404


def test_closed_survey_is_gone(
    client: TestClient, make_survey: Callable[..., Survey], admin: dict[str, str]
) -> None:
    survey = make_survey()
    client.post(f"/api/v1/surveys/{survey.id}/close", headers=admin)
    response = _submit(client, survey.slug, STORY)
    assert response.status_code == 410 and response.headers["content-type"] == PROBLEM


def test_json_rate_limit(client: TestClient, make_survey: Callable[..., Survey]) -> None:
    client.app.state.submit_limiter.limit = 1  # type: ignore[attr-defined]
    survey = make_survey()
    assert _submit(client, survey.slug, STORY).status_code == 201
    limited = _submit(client, survey.slug, STORY)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "60"
