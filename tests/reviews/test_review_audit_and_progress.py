"""The audit trail of the review workflow (listing, filters, append-only), bulk assignments and
each researcher's progress."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient

from app.models import Survey
from app.models.base import utcnow


def _events(client: TestClient, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    response = client.get("/api/v1/audit", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def test_codings_exclusions_and_adjudications_are_audited(
    client: TestClient,
    review: Any,
    person: Callable[..., Any],
    make_survey: Callable[..., Survey],
    codebook_id: int,
    make_story: Any,
    admin_person: Any,
) -> None:
    survey = make_survey(codebook_id=codebook_id, double_coding_share=100)
    story = make_story(survey)
    alice, bob = person(name="alice"), person(name="bob")
    review.code(alice, story, ["complaint"], note="first look")
    review.code(alice, story, ["complaint", "owner_error"])
    review.exclude(bob, story, "not one discrete episode")
    review.adjudicate(admin_person, story, {"codes": ["owner_error"], "note": "customer error"})

    trail = client.get(f"/api/v1/incidents/{story}/audit", headers=admin_person.headers)
    assert trail.status_code == 200
    events = list(reversed(trail.json()["items"]))  # oldest first
    assert [(e["action"], e["actor_name"]) for e in events] == [
        ("coding.create", "alice"),
        ("incident.in_review", "alice"),
        ("coding.update", "alice"),
        ("coding.create", "bob"),
        ("incident.adjudication", "bob"),
        ("incident.adjudicate", "the-admin"),
    ]
    create, _, update, exclusion, disagreement, adjudication = events
    assert create["before"] is None
    assert create["after"]["codes"] == [{"code": "complaint", "decision": "added"}]
    assert create["after"]["note"] == "first look"
    assert update["before"]["codes"] == create["after"]["codes"]
    assert {c["code"] for c in update["after"]["codes"]} == {"complaint", "owner_error"}
    assert exclusion["after"]["excluded"] is True
    assert exclusion["after"]["exclusion_reason"] == "not one discrete episode"
    assert disagreement["before"]["status"] == "in_review"
    assert disagreement["after"]["status"] == "adjudication"
    assert adjudication["before"]["status"] == "adjudication"
    assert adjudication["after"] == {
        "status": "coded",
        "final_codes": ["owner_error"],
        "source": "adjudication",
        "exclusion_reason": None,
        "note": "customer error",
    }
    for event in events:
        assert event["entity_type"] == "incident" and event["entity_id"] == str(story)
        assert event["at"]

    # Researchers read none of it; a missing story is a 404.
    assert client.get(f"/api/v1/incidents/{story}/audit", headers=alice.headers).status_code == 403
    assert (
        client.get("/api/v1/incidents/999999/audit", headers=admin_person.headers).status_code
        == 404
    )


def test_audit_listing_filters_pages_and_is_append_only(
    client: TestClient,
    review: Any,
    person: Callable[..., Any],
    survey: Survey,
    make_story: Any,
    admin_person: Any,
) -> None:
    alice, bob = person(name="alice"), person(name="bob")
    stories = [make_story(survey) for _ in range(3)]
    for story in stories:
        review.code(alice, story, ["complaint"])
    review.code(bob, make_story(survey), ["extra_mile"])
    headers = admin_person.headers

    everything = _events(client, headers)
    ids = [e["id"] for e in everything]
    assert ids == sorted(ids, reverse=True)  # newest first
    actions = {e["action"] for e in everything}
    assert {"token.create", "survey.create", "coding.create", "incident.coded"} <= actions

    by_alice = _events(client, headers, actor="alice", action="coding.create")
    assert len(by_alice) == 3
    assert {e["entity_id"] for e in by_alice} == {str(s) for s in stories}
    assert len(_events(client, headers, entity_type="incident", entity_id=stories[0])) == 2
    assert _events(client, headers, entity_type="api_token", actor="bob") == []
    assert len(_events(client, headers, entity_type="api_token")) >= 3
    future = (utcnow() + timedelta(hours=1)).isoformat()
    past = (utcnow() - timedelta(hours=1)).isoformat()
    assert _events(client, headers, at_from=future) == []
    assert len(_events(client, headers, at_from=past)) == len(everything)
    assert _events(client, headers, at_to=past) == []

    first = client.get("/api/v1/audit", params={"limit": 3}, headers=headers).json()
    assert [e["id"] for e in first["items"]] == ids[:3] and first["next_cursor"]
    second = client.get(
        "/api/v1/audit", params={"limit": 3, "cursor": first["next_cursor"]}, headers=headers
    ).json()
    assert [e["id"] for e in second["items"]] == ids[3:6]
    assert client.get("/api/v1/audit?cursor=nonsense", headers=headers).status_code == 400

    # Append-only: no API edits or deletes it.
    for method in ("put", "patch", "delete", "post"):
        response = client.request(method, "/api/v1/audit", headers=headers, json={})
        assert response.status_code == 405, method
        response = client.request(method, f"/api/v1/audit/{ids[0]}", headers=headers, json={})
        assert response.status_code in (404, 405), method
    assert [e["id"] for e in _events(client, headers)] == ids


def test_assignments(
    client: TestClient,
    review: Any,
    person: Callable[..., Any],
    make_survey: Callable[..., Survey],
    codebook_id: int,
    make_story: Any,
    admin_person: Any,
) -> None:
    survey = make_survey(codebook_id=codebook_id)
    other_survey = make_survey(codebook_id=codebook_id)
    alice, bob = person(name="alice"), person(name="bob")
    person("viewer", name="vera")
    stories = [make_story(survey, age_minutes=100 - i) for i in range(6)]
    elsewhere = make_story(other_survey, age_minutes=500)
    review.code(bob, stories[0], ["complaint"])  # coded: never assigned by count
    url = "/api/v1/review/assignments"
    headers = admin_person.headers

    by_ids = client.post(
        url, json={"researcher": "alice", "incident_ids": [stories[2], elsewhere]}, headers=headers
    )
    assert by_ids.status_code == 201
    assert by_ids.json() == {
        "researcher": "alice",
        "assigned": [stories[2], elsewhere],
        "already_assigned": [],
    }
    again = client.post(
        url, json={"researcher": "alice", "incident_ids": [stories[2]]}, headers=headers
    ).json()
    assert again["assigned"] == [] and again["already_assigned"] == [stories[2]]

    by_count = client.post(
        url, json={"researcher": "bob", "survey_id": survey.id, "count": 2}, headers=headers
    ).json()
    assert by_count["assigned"] == [stories[1], stories[3]]  # oldest open, unassigned

    for body, status in (
        ({"researcher": "nobody", "incident_ids": [stories[1]]}, 404),
        ({"researcher": "vera", "incident_ids": [stories[1]]}, 400),
        ({"researcher": "alice", "incident_ids": [999999]}, 404),
        ({"researcher": "alice", "survey_id": 999999, "count": 1}, 404),
        ({"researcher": "alice", "survey_id": survey.id}, 422),
        ({"researcher": "alice", "incident_ids": [1], "survey_id": survey.id, "count": 1}, 422),
        ({"researcher": "alice"}, 422),
    ):
        response = client.post(url, json=body, headers=headers)
        assert response.status_code == status, (body, response.text)
    assert (
        client.post(
            url, json={"researcher": "alice", "incident_ids": [stories[1]]}, headers=alice.headers
        ).status_code
        == 403
    )

    assigned = _events(client, headers, action="review.assign")
    assert [e["after"]["incident_ids"] for e in reversed(assigned)] == [
        [stories[2], elsewhere],
        [stories[1], stories[3]],
    ]


def test_progress(
    client: TestClient,
    review: Any,
    person: Callable[..., Any],
    make_survey: Callable[..., Survey],
    codebook_id: int,
    make_story: Any,
    admin_person: Any,
) -> None:
    survey = make_survey(codebook_id=codebook_id, double_coding_share=100)
    alice, bob = person(name="alice"), person(name="bob")
    stories = [make_story(survey) for _ in range(5)]
    client.post(
        "/api/v1/review/assignments",
        json={"researcher": "alice", "incident_ids": stories[3:]},
        headers=admin_person.headers,
    )

    def progress(who: Any, **params: Any) -> dict[str, Any]:
        response = client.get("/api/v1/review/progress", params=params, headers=who.headers)
        assert response.status_code == 200, response.text
        return dict(response.json())

    start = progress(alice)
    assert start == {
        "researcher": "alice",
        "coded": 0,
        "remaining_in_queue": 5,
        "assigned_remaining": 2,
        "agreement": {"double_coded": 0, "agreed": 0, "share": None},
        "by_survey": [
            {
                "survey_id": survey.id,
                "title": "Test survey",
                "coded": 0,
                "remaining_in_queue": 5,
                "assigned_remaining": 2,
            }
        ],
        "needs_revision": [],
        "notifications": [],
    }
    review.code(alice, stories[0], ["complaint"])
    review.code(bob, stories[0], ["complaint"])
    review.code(alice, stories[1], ["complaint"])
    review.code(bob, stories[1], ["extra_mile"])
    review.code(alice, stories[2], ["complaint"])  # bob has not coded this one yet
    review.code(alice, stories[3], ["owner_error"])
    assert review.next_id(alice) == stories[4]  # held by alice: still in her queue

    now = progress(alice)
    assert now["coded"] == 4
    assert now["remaining_in_queue"] == 1
    assert now["assigned_remaining"] == 1
    assert now["agreement"] == {"double_coded": 2, "agreed": 1, "share": 0.5}
    assert progress(admin_person, researcher="alice") == now
    assert progress(alice, researcher="alice") == now
    assert progress(bob)["remaining_in_queue"] == 3  # 2, 3 and 4 (a second coding)
    assert now["by_survey"][0]["coded"] == 4
    other = make_survey(codebook_id=codebook_id, title="Other survey")
    make_story(other)
    assert progress(alice, survey_id=other.id)["remaining_in_queue"] == 1
    both = progress(alice)
    assert [(s["survey_id"], s["remaining_in_queue"]) for s in both["by_survey"]] == [
        (survey.id, 1),
        (other.id, 1),
    ]
    assert both["remaining_in_queue"] == 2
    missing = client.get(
        "/api/v1/review/progress", params={"researcher": "ghost"}, headers=admin_person.headers
    )
    assert missing.status_code == 404
