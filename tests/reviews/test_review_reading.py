"""Reading stories: filters, text search over what the caller may see, keyset pages, and the
survey's review settings."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient

from app.models import Survey
from app.models.base import utcnow


def _ids(client: TestClient, who: Any, **params: Any) -> list[int]:
    response = client.get("/api/v1/incidents", headers=who.headers, params=params)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


def test_filters(
    client: TestClient,
    review: Any,
    person: Callable[..., Any],
    make_survey: Callable[..., Survey],
    codebook_id: int,
    make_story: Any,
) -> None:
    first = make_survey(codebook_id=codebook_id)
    second = make_survey(codebook_id=codebook_id)
    alice = person()
    old = make_story(first, age_minutes=60 * 24 * 10, valence="dissatisfying", channel="Phone")
    recent = make_story(first, age_minutes=60, touchpoint="Check-in", channel="In person")
    elsewhere = make_story(second, age_minutes=30, touchpoint="On board")
    review.code(alice, old, ["complaint"])
    review.exclude(alice, elsewhere, "no interaction")

    assert _ids(client, alice) == [old, recent, elsewhere]
    assert _ids(client, alice, survey_id=first.id) == [old, recent]
    assert _ids(client, alice, status="coded") == [old]
    assert _ids(client, alice, status="excluded") == [elsewhere]
    assert _ids(client, alice, status="new") == [recent]
    assert _ids(client, alice, code="complaint") == [old]
    assert _ids(client, alice, code="extra_mile") == []
    assert _ids(client, alice, valence="dissatisfying") == [old]
    assert _ids(client, alice, valence="satisfying") == [recent, elsewhere]
    assert _ids(client, alice, touchpoint="Check-in") == [recent]
    assert _ids(client, alice, channel="Phone") == [old]
    since = (utcnow() - timedelta(days=1)).isoformat()
    assert _ids(client, alice, submitted_from=since) == [recent, elsewhere]
    assert _ids(client, alice, submitted_to=since) == [old]
    naive = (utcnow() - timedelta(days=1)).replace(tzinfo=None).isoformat()
    assert _ids(client, alice, submitted_from=naive) == [recent, elsewhere]  # read as UTC
    assert _ids(client, alice, survey_id=first.id, status="new", channel="In person") == [recent]
    bad = client.get("/api/v1/incidents", headers=alice.headers, params={"status": "done"})
    assert bad.status_code == 422

    # keyset pages keep working with filters
    page = client.get(
        "/api/v1/incidents", headers=alice.headers, params={"survey_id": first.id, "limit": 1}
    ).json()
    assert [i["id"] for i in page["items"]] == [old] and page["next_cursor"]
    rest = client.get(
        "/api/v1/incidents",
        headers=alice.headers,
        params={"survey_id": first.id, "limit": 1, "cursor": page["next_cursor"]},
    ).json()
    assert [i["id"] for i in rest["items"]] == [recent] and rest["next_cursor"] is None


def test_text_search_covers_only_what_the_caller_reads(
    client: TestClient,
    person: Callable[..., Any],
    admin_person: Any,
    survey: Survey,
    make_story: Any,
) -> None:
    mail = make_story(
        survey,
        what_happened="Please write to Jane.Doe@Example.com about the refund.",
        outcome="Grüße: a 100% refund_in_full",
    )
    other = make_story(survey, circumstances="The LOUNGE was closed.", what_happened="Nothing.")
    alice = person()

    assert _ids(client, alice, q="lounge") == [other]
    assert _ids(client, alice, q="REFUND") == [mail]
    assert _ids(client, alice, q="jane.doe") == []  # redacted away for researchers
    assert _ids(client, alice, q="example.com") == []
    assert _ids(client, alice, q="[EMAIL]") == [mail]
    assert _ids(client, alice, q="100%") == [mail]  # LIKE wildcards are literal
    assert _ids(client, alice, q="the_refund") == []  # "_" is no wildcard either
    assert _ids(client, alice, q="_in_") == [mail]
    assert _ids(client, alice, q="Grüße") == [mail]
    assert _ids(client, alice, q='"what_happened"') == []  # JSON keys are not text
    assert _ids(client, admin_person, q="jane.doe@example") == [mail]
    assert _ids(client, admin_person, q="jane.doe", view="redacted") == []


def test_survey_review_settings(client: TestClient, admin: dict[str, str]) -> None:
    created = client.post(
        "/api/v1/surveys",
        json={"title": "Coded twice", "double_coding_share": 25, "review_order": "least_certain"},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    survey = created.json()
    assert survey["double_coding_share"] == 25 and survey["review_order"] == "least_certain"
    default = client.post("/api/v1/surveys", json={"title": "Plain"}, headers=admin).json()
    assert default["double_coding_share"] == 0 and default["review_order"] == "oldest"

    for bad in ({"double_coding_share": 101}, {"double_coding_share": -1}, {"review_order": "x"}):
        response = client.patch(f"/api/v1/surveys/{survey['id']}", json=bad, headers=admin)
        assert response.status_code == 422, bad
    updated = client.patch(
        f"/api/v1/surveys/{survey['id']}", json={"double_coding_share": 100}, headers=admin
    ).json()
    assert updated["double_coding_share"] == 100 and updated["review_order"] == "least_certain"

    events = client.get(
        "/api/v1/audit",
        params={"entity_type": "survey", "entity_id": survey["id"], "action": "survey.update"},
        headers=admin,
    ).json()["items"]
    assert len(events) == 1
    assert events[0]["before"]["double_coding_share"] == 25
    assert events[0]["after"]["double_coding_share"] == 100
