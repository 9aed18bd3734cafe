"""The coding path's two routes (`POST /review/next`, `PUT .../codings/me`) check the caller, do
their work and commit in one worker-thread call (`app.auth.one_hop`) instead of the dependency
chain the other routes use: the same answers for every kind of caller, the same refusals in
the same order, and nothing left behind when a request fails."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from app.accounts import sessions as web_sessions
from app.config import Settings
from app.models import ApiToken, Coding, Job, ReviewLease, Suggestion, Survey
from tests.reviews.conftest import PROBLEM, Person
from tests.workbench.conftest import make_person, sign_in

NEXT = "/api/v1/review/next"


def _coding(story: int) -> str:
    return f"/api/v1/incidents/{story}/codings/me"


def _count(db: Callable[[], Any], model: Any) -> int:
    with db() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_a_request_without_credentials_is_refused_before_its_body_is_read(
    client: TestClient, survey: Survey, make_story: Any
) -> None:
    story = make_story(survey)
    for method, url in (("post", NEXT), ("put", _coding(story))):
        # A body that fails validation: still 401, as with the dependency chain.
        response = client.request(method, url, json={"codes": "not a list", "survey_id": "x"})
        assert response.status_code == 401, (url, response.text)
        assert response.headers["content-type"] == PROBLEM
        assert "missing bearer token" in response.json()["detail"]


def test_bad_tokens_and_roles_are_refused_and_leave_nothing(
    client: TestClient,
    app: FastAPI,
    db: Callable[[], Any],
    person: Callable[..., Person],
    survey: Survey,
    make_story: Any,
) -> None:
    story = make_story(survey)
    viewer = person("viewer")
    cases = (
        ({"Authorization": "Bearer cit_not-a-token"}, 401, "invalid or revoked token"),
        (viewer.headers, 403, "this needs the role admin or researcher"),
    )
    for headers, status, detail in cases:
        for method, url, body in (
            ("post", NEXT, {}),
            ("put", _coding(story), {"codes": [{"code": "complaint"}]}),
        ):
            response = client.request(
                method, url, headers={**headers, "If-Match": '"1"'}, json=body
            )
            assert response.status_code == status, (url, response.text)
            assert response.headers["content-type"] == PROBLEM
            assert detail in response.json()["detail"]
    assert _count(db, ReviewLease) == 0
    assert _count(db, Coding) == 0
    assert app.state.db_gate.in_use == 0


def test_a_failed_request_rolls_back_and_gives_its_slot_back(
    client: TestClient,
    app: FastAPI,
    db: Callable[[], Any],
    person: Callable[..., Person],
    survey: Survey,
    make_story: Any,
) -> None:
    story = make_story(survey)
    coder = person()
    handed = client.post(NEXT, headers=coder.headers, json={})
    assert handed.status_code == 200, handed.text
    assert handed.json()["incident"]["id"] == story
    # A stale If-Match: 412, and no coding written.
    stale = client.put(
        _coding(story),
        headers={**coder.headers, "If-Match": '"stale"'},
        json={"codes": [{"code": "complaint"}]},
    )
    assert stale.status_code == 412, stale.text
    assert _count(db, Coding) == 0
    assert app.state.db_gate.in_use == 0
    # The lease from the hand-out was committed before its answer; the save goes through.
    assert _count(db, ReviewLease) == 1
    saved = client.put(
        _coding(story),
        headers={**coder.headers, "If-Match": handed.headers["ETag"]},
        json={"codes": [{"code": "complaint"}]},
    )
    assert saved.status_code == 200, saved.text
    assert saved.headers["ETag"] and saved.json()["codes"][0]["code"] == "complaint"
    assert _count(db, Coding) == 1
    with db() as session:
        touched = session.scalar(select(ApiToken.last_used_at).where(ApiToken.revoked_at.is_(None)))
    assert touched is not None  # the token's last use, written in the request's transaction


def test_a_signed_in_researcher_codes_with_the_csrf_token_and_not_without(
    app: FastAPI, settings: Settings, db: Callable[[], Any], survey: Survey, make_story: Any
) -> None:
    story = make_story(survey)
    make_person(app, settings, "web-coder", "researcher")
    with TestClient(app, base_url="http://testserver") as browser:
        assert sign_in(browser, "web-coder").status_code == 303
        cookie = browser.cookies[web_sessions.SESSION_COOKIE]
        csrf = {web_sessions.CSRF_HEADER: web_sessions.csrf_token(settings, cookie)}
        refused = browser.post(NEXT, json={})
        assert refused.status_code == 403, refused.text
        assert "CSRF" in refused.json()["detail"]
        assert _count(db, ReviewLease) == 0
        handed = browser.post(NEXT, headers=csrf, json={})
        assert handed.status_code == 200, handed.text
        tag = handed.headers["ETag"]
        body = {"codes": [{"code": "extra_mile"}]}
        refused = browser.put(_coding(story), headers={"If-Match": tag}, json=body)
        assert refused.status_code == 403, refused.text
        saved = browser.put(_coding(story), headers={**csrf, "If-Match": tag}, json=body)
        assert saved.status_code == 200, saved.text
        assert saved.json()["coder"] == "web-coder"


def test_the_openapi_document_keeps_the_routes_security_and_refusals(app: FastAPI) -> None:
    schema = app.openapi()
    for path, method in (
        ("/api/v1/review/next", "post"),
        ("/api/v1/incidents/{incident_id}/codings/me", "put"),
    ):
        operation = schema["paths"][path][method]
        schemes = {name for entry in operation["security"] for name in entry}
        assert schemes == {"HTTPBearer", "APIKeyCookie"}, operation["security"]
        for status in ("401", "403", "422", "503"):
            assert PROBLEM in operation["responses"][status]["content"], status


def test_the_hand_out_reads_what_the_story_has_and_skips_what_it_has_not(
    client: TestClient,
    db: Callable[[], Any],
    person: Callable[..., Person],
    survey: Survey,
    make_story: Any,
) -> None:
    """The candidate query (SQLite) or the lease statement (PostgreSQL) says whether the story
    has codings, final codes or a pending suggestion job; the answer must still carry them."""
    waiting = make_story(survey)  # its suggestion job is still queued
    done = make_story(survey)
    with db() as session:
        session.execute(update(Job).where(Job.subject == f"incident:{done}").values(status="done"))
    coder = person()
    seen = {}
    for _ in range(2):
        handed = client.post(NEXT, headers=coder.headers, json={})
        assert handed.status_code == 200, handed.text
        item = handed.json()["incident"]
        seen[item["id"]] = item["suggestion_job"]
        saved = client.put(
            _coding(item["id"]),
            headers={**coder.headers, "If-Match": handed.headers["ETag"]},
            json={"codes": [{"code": "complaint"}]},
        )
        assert saved.status_code == 200, saved.text
    assert seen[waiting] is not None and seen[waiting]["status"] == "queued"
    assert seen[done] is None


@pytest.mark.parametrize("order", ["oldest", "least_certain"])
def test_the_hand_out_carries_the_same_suggestions_as_reading_the_story(
    client: TestClient,
    db: Callable[[], Any],
    person: Callable[..., Person],
    survey: Survey,
    make_story: Any,
    order: str,
) -> None:
    """The hand-out reads the story's suggestion row in its candidate (SQLite) or lease
    (PostgreSQL) statement; reading the story reads it on its own. Both must agree, in either
    review order (the least-certain candidates join the suggestions table)."""
    with db() as session:
        session.execute(update(Survey).where(Survey.id == survey.id).values(review_order=order))
    suggested = make_story(survey, certainty=0.2, suggested=("complaint", "extra_mile"))
    with db() as session:
        session.execute(
            update(Suggestion)
            .where(Suggestion.incident_id == suggested)
            .values(
                exclusion={"score": 0.7, "suggested": True, "threshold": 0.5, "source": "model"}
            )
        )
    bare = make_story(survey)  # no suggestion row
    coder = person()
    handed = {}
    for _ in range(2):
        got = client.post(NEXT, headers=coder.headers, json={})
        assert got.status_code == 200, got.text
        story = got.json()["incident"]["id"]
        handed[story] = got.json()["incident"]
        saved = client.put(
            _coding(story),
            headers={**coder.headers, "If-Match": got.headers["ETag"]},
            json={"codes": [{"code": "complaint"}]},
        )
        assert saved.status_code == 200, saved.text
    assert set(handed) == {suggested, bare}
    for story, item in handed.items():
        read = client.get(f"/api/v1/incidents/{story}", headers=coder.headers)
        assert read.status_code == 200, read.text
        for key in ("suggestions", "exclusion_suggestion"):
            assert item.get(key) == read.json().get(key), (story, key)
    items = handed[suggested]["suggestions"]
    assert [s["code"] for s in items if s["suggested"]] == ["complaint", "extra_mile"]
    assert all(s["codebook_version_id"] and s["created_at"] for s in items)
    assert handed[bare]["suggestions"] == []
    assert handed[suggested]["exclusion_suggestion"]["score"] == 0.7
