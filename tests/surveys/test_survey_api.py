"""Survey API: roles, CRUD, open/close, invitations (hashed, CSV), audit, problem+json."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from app.models import ApiToken, AuditEvent, Invitation

PROBLEM = "application/problem+json"


def _create(client: TestClient, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    body = {"title": "Airline study", **fields}
    response = client.post("/api/v1/surveys", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_healthz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_missing_and_bad_tokens_are_401_problems(client: TestClient) -> None:
    for headers in ({}, {"Authorization": "Bearer cit_nope"}):
        response = client.get("/api/v1/surveys", headers=headers)
        assert response.status_code == 401
        assert response.headers["content-type"] == PROBLEM
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["status"] == 401


def test_roles_are_enforced(client: TestClient, token_for: Callable[..., dict[str, str]]) -> None:
    researcher, viewer = token_for("researcher"), token_for("viewer")
    response = client.post("/api/v1/surveys", json={"title": "x"}, headers=researcher)
    assert response.status_code == 403
    assert response.headers["content-type"] == PROBLEM
    assert "admin" in response.json()["detail"]
    assert client.get("/api/v1/surveys", headers=researcher).status_code == 200
    assert client.get("/api/v1/surveys", headers=viewer).status_code == 403
    assert client.get("/api/v1/incidents", headers=viewer).status_code == 403


def test_create_uses_cit_default_questions(client: TestClient, admin: dict[str, str]) -> None:
    survey = _create(client, admin, touchpoints=["Gate"], channels=["Phone"])
    assert survey["status"] == "draft" and survey["accepting_responses"] is False
    assert "led up to it" in survey["questions"]["circumstances"]
    assert "say or do" in survey["questions"]["what_happened"]
    assert survey["link"] == f"http://testserver/s/{survey['slug']}"
    german = _create(client, admin, language="de", questions={"outcome": "Und dann?"})
    assert german["questions"]["circumstances"] == "Wie kam es dazu?"
    assert german["questions"]["outcome"] == "Und dann?"


def test_read_edit_open_close(client: TestClient, admin: dict[str, str]) -> None:
    survey = _create(client, admin)
    sid = survey["id"]
    assert client.get(f"/api/v1/surveys/{sid}", headers=admin).json()["title"] == "Airline study"
    edited = client.patch(
        f"/api/v1/surveys/{sid}",
        headers=admin,
        json={"title": "Renamed", "channels": ["Chat"], "questions": {"prompt": "Tell us"}},
    ).json()
    assert edited["title"] == "Renamed" and edited["channels"] == ["Chat"]
    assert edited["questions"]["prompt"] == "Tell us"
    assert edited["version"] == survey["version"] + 1
    assert edited["updated_at"] > survey["updated_at"]
    assert client.post(f"/api/v1/surveys/{sid}/open", headers=admin).json()["status"] == "open"
    closed = client.post(f"/api/v1/surveys/{sid}/close", headers=admin).json()
    assert closed["status"] == "closed" and closed["accepting_responses"] is False


def test_validation_errors_are_problems(client: TestClient, admin: dict[str, str]) -> None:
    response = client.post(
        "/api/v1/surveys", headers=admin, json={"title": "", "colour": "red", "language": "xx"}
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    locs = {tuple(e["loc"]) for e in response.json()["errors"]}
    assert ("body", "title") in locs and ("body", "colour") in locs
    assert ("body", "language") in locs
    assert client.get("/api/v1/surveys/999", headers=admin).status_code == 404
    dup = client.post("/api/v1/surveys", headers=admin, json={"title": "a", "slug": "same-slug"})
    assert dup.status_code == 201
    again = client.post("/api/v1/surveys", headers=admin, json={"title": "b", "slug": "same-slug"})
    assert again.status_code == 409 and again.headers["content-type"] == PROBLEM


def test_a_close_date_is_iso_8601_never_a_number(client: TestClient, admin: dict[str, str]) -> None:
    # Pydantic alone reads 0 as 1970-01-01 (a Unix timestamp); the OpenAPI document says
    # date-time (schemathesis found PATCH accepting `closes_at: 0`).
    sid = _create(client, admin)["id"]
    for number in (0, 1_700_000_000, 1.5):
        response = client.patch(f"/api/v1/surveys/{sid}", headers=admin, json={"closes_at": number})
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == PROBLEM
        assert ("body", "closes_at") in {tuple(e["loc"]) for e in response.json()["errors"]}
    created = client.post("/api/v1/surveys", headers=admin, json={"title": "t", "closes_at": 0})
    assert created.status_code == 422
    later = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    response = client.patch(
        f"/api/v1/surveys/{sid}", headers=admin, json={"closes_at": later.isoformat()}
    )
    assert response.status_code == 200
    assert datetime.fromisoformat(response.json()["closes_at"]) == later


def test_past_close_date_stops_responses(client: TestClient, admin: dict[str, str]) -> None:
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    survey = _create(client, admin, open=True, closes_at=past)
    assert survey["accepting_responses"] is False
    response = client.post(f"/api/v1/surveys/{survey['id']}/open", headers=admin)
    assert response.status_code == 200  # already open; the close date still wins
    assert client.get(f"/s/{survey['slug']}").status_code == 410


def test_invitations_are_single_use_hashed_and_downloadable(
    client: TestClient, admin: dict[str, str], db: Callable[[], Any]
) -> None:
    survey = _create(client, admin, open=True)
    response = client.post(
        f"/api/v1/surveys/{survey['id']}/invitations",
        headers=admin,
        json={"count": 3, "attributes": {"segment": "business"}},
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert len(created) == 3 and len({i["link"] for i in created}) == 3
    tokens = [i["link"].rsplit("/", 1)[1] for i in created]
    with db() as session:
        stored = session.scalars(select(Invitation)).all()
        assert {len(r.token_hash) for r in stored} == {64}
        for token in tokens:  # the token itself is stored nowhere
            assert all(token not in (r.token_hash, r.nonce) for r in stored)

    listing = client.get(f"/api/v1/surveys/{survey['id']}/invitations?limit=2", headers=admin)
    page = listing.json()
    assert [i["link"] for i in page["items"]] == [i["link"] for i in created[:2]]
    rest = client.get(
        f"/api/v1/surveys/{survey['id']}/invitations",
        params={"cursor": page["next_cursor"]},
        headers=admin,
    ).json()
    assert [i["link"] for i in rest["items"]] == [created[2]["link"]]
    assert rest["next_cursor"] is None

    download = client.get(
        f"/api/v1/surveys/{survey['id']}/invitations", headers={**admin, "Accept": "text/csv"}
    )
    assert download.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(download.text)))
    assert [r["link"] for r in rows] == [i["link"] for i in created]
    assert {r["segment"] for r in rows} == {"business"} and {r["status"] for r in rows} == {
        "unused"
    }

    as_csv = client.post(
        f"/api/v1/surveys/{survey['id']}/invitations?format=csv", headers=admin, json={"count": 1}
    )
    assert as_csv.status_code == 201 and as_csv.text.startswith("id,link,status")


def test_invitation_request_is_checked(client: TestClient, admin: dict[str, str]) -> None:
    survey = _create(client, admin)
    url = f"/api/v1/surveys/{survey['id']}/invitations"
    assert client.post(url, headers=admin, json={"count": 0}).status_code == 422
    assert (
        client.post(url, headers=admin, json={"count": 1, "attributes": {"bad key": 1}}).status_code
        == 422
    )
    client.post(f"/api/v1/surveys/{survey['id']}/close", headers=admin)
    assert client.post(url, headers=admin, json={"count": 1}).status_code == 409


def test_tokens_are_hashed_and_audited(
    client: TestClient, admin: dict[str, str], db: Callable[[], Any]
) -> None:
    response = client.post(
        "/api/v1/tokens", headers=admin, json={"name": "Dana", "role": "researcher"}
    )
    assert response.status_code == 201
    token = response.json()["token"]
    me = client.get("/api/v1/tokens/me", headers={"Authorization": f"Bearer {token}"}).json()
    assert me["name"] == "Dana" and me["role"] == "researcher"
    conflict = client.post("/api/v1/tokens", headers=admin, json={"name": "Dana", "role": "admin"})
    assert conflict.status_code == 409
    with db() as session:
        assert token not in {t.token_hash for t in session.scalars(select(ApiToken))}
        actions = [e.action for e in session.scalars(select(AuditEvent))]
    assert actions.count("token.create") == 2  # the admin fixture's token, and Dana's
    prefix = token[:10]
    assert client.delete(f"/api/v1/tokens/{prefix}", headers=admin).status_code == 204
    assert (
        client.get("/api/v1/tokens/me", headers={"Authorization": f"Bearer {token}"}).status_code
        == 401
    )


def test_survey_changes_are_audited(
    client: TestClient, admin: dict[str, str], db: Callable[[], Any]
) -> None:
    survey = _create(client, admin)
    client.patch(f"/api/v1/surveys/{survey['id']}", headers=admin, json={"title": "New"})
    client.post(f"/api/v1/surveys/{survey['id']}/open", headers=admin)
    with db() as session:
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.entity_type == "survey").order_by(AuditEvent.id)
        ).all()
    assert [e.action for e in events] == ["survey.create", "survey.update", "survey.open"]
    update = events[1]
    assert update.before is not None and update.after is not None
    assert (update.before["title"], update.after["title"]) == ("Airline study", "New")
    assert update.actor_name.startswith("admin-")


def test_openapi_lists_problem_responses(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert "Problem" in spec["components"]["schemas"]
    responses = spec["paths"]["/api/v1/surveys/{survey_id}"]["get"]["responses"]
    assert "application/problem+json" in responses["404"]["content"]
