"""Inputs found by fuzzing the OpenAPI document (schemathesis) that once gave a 500."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from app.models import Survey

PROBLEM = "application/problem+json"
HUGE = "99999999999999999999"  # beyond any database integer


def test_ids_beyond_the_integer_range_are_a_client_error(
    client: TestClient, admin: dict[str, str]
) -> None:
    for path in (
        f"/api/v1/surveys/{HUGE}",
        f"/api/v1/incidents?survey_id={HUGE}",
        f"/api/v1/jobs/{HUGE}",
        f"/api/v1/codebooks/{HUGE}/versions",
        "/api/v1/incidents/3000000000",  # beyond PostgreSQL's 32-bit integer
    ):
        response = client.get(path, headers=admin)
        assert response.status_code in (404, 422), (path, response.status_code)
        assert response.headers["content-type"] == PROBLEM


def test_explicit_nulls_in_a_survey_update_leave_fields_alone(
    client: TestClient, admin: dict[str, str], make_survey: Callable[..., Survey]
) -> None:
    survey = make_survey()
    response = client.patch(
        f"/api/v1/surveys/{survey.id}", headers=admin, json={"touchpoints": None, "channels": None}
    )
    assert response.status_code == 200, response.text
    assert response.json()["touchpoints"] == ["Check-in", "On board"]


def test_nul_characters_in_a_story_are_refused_clearly(
    client: TestClient, make_survey: Callable[..., Survey]
) -> None:
    survey = make_survey()
    response = client.post(
        f"/api/v1/public/surveys/{survey.slug}/incidents",
        json={"what_happened": "bad\x00byte", "valence": "satisfying"},
    )
    assert response.status_code == 422 and response.headers["content-type"] == PROBLEM
    assert [e["type"] for e in response.json()["errors"]] == ["invalid_characters"]


def test_dates_in_queries_are_iso_8601_not_unix_timestamps(
    client: TestClient, admin: dict[str, str]
) -> None:
    for path in (
        "/api/v1/incidents?submitted_from=1700000000",
        "/api/v1/reports/trends?from=1700000000",
    ):
        response = client.get(path, headers=admin)
        assert response.status_code == 422, (path, response.status_code)
        assert response.headers["content-type"] == PROBLEM
        assert "ISO 8601" in response.text
    ok = client.get("/api/v1/incidents?submitted_from=2026-01-01T00:00:00Z", headers=admin)
    assert ok.status_code == 200, ok.text
    ok = client.get("/api/v1/reports/trends?from=2026-01-01", headers=admin)
    assert ok.status_code == 200, ok.text


def test_method_not_allowed_names_every_method_the_path_allows(
    client: TestClient, admin: dict[str, str]
) -> None:
    response = client.delete("/api/v1/surveys", headers=admin)
    assert response.status_code == 405
    assert response.headers["content-type"] == PROBLEM
    allowed = {m.strip() for m in response.headers["allow"].split(",")}
    assert {"GET", "POST"} <= allowed
    assert "DELETE" not in allowed


def test_a_fixed_path_is_not_taken_for_an_id(client: TestClient, admin: dict[str, str]) -> None:
    # /codebooks/qdc is its own resource (POST), not codebook "qdc" of /codebooks/{codebook_id}.
    response = client.put("/api/v1/codebooks/qdc", headers=admin, json={})
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    response = client.get("/api/v1/codebooks/abc", headers=admin)
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM


def test_fixed_paths_beside_ids_and_strict_booleans(
    client: TestClient, admin: dict[str, str], make_survey: Callable[..., Survey]
) -> None:
    # /cases/summary is not case "summary" of /cases/{case_id}.
    response = client.patch("/api/v1/cases/summary", headers=admin, json={})
    assert response.status_code == 405 and response.headers["allow"] == "GET"
    # A JSON number is not a yes: consent and contact_ok are booleans.
    survey = make_survey()
    story = {"what_happened": "The agent rebooked us.", "valence": "satisfying"}
    for field in ("consent", "contact_ok"):
        response = client.post(
            f"/api/v1/public/surveys/{survey.slug}/incidents", json={**story, field: 1}
        )
        assert response.status_code == 422, (field, response.text)
        assert response.headers["content-type"] == PROBLEM
