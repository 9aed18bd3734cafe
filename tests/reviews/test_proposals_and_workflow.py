"""Inductive coding (proposed codes), codebook changes mapping every coder's codings, "no code
applies", and admins choosing the double-coded stories, through the API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from app.models import Survey
from tests.reviews.conftest import Person, Review

PROPOSALS = "/api/v1/code-proposals"


def _coding(client: TestClient, who: Person, incident_id: int) -> dict[str, Any]:
    response = client.get(f"/api/v1/incidents/{incident_id}/codings/me", headers=who.headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _propose(client: TestClient, who: Person, incident_id: int, key: str) -> dict[str, Any]:
    response = client.post(
        PROPOSALS,
        json={"incident_id": incident_id, "key": key, "label": key.title(), "definition": "new"},
        headers=who.headers,
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_a_proposed_code_is_usable_at_once_and_accepted_into_a_new_version(
    client: TestClient,
    review: Review,
    person: Callable[..., Person],
    admin_person: Person,
    survey: Survey,
    make_story: Any,
    codebook_id: int,
) -> None:
    alice, bob = person(name="alice"), person(name="bob")
    story, other = make_story(survey), make_story(survey)
    proposal = _propose(client, alice, story, "waiting_time")
    assert proposal["status"] == "proposed" and proposal["proposed_by"] == "alice"
    # The key is alice's only, and taken while proposed.
    assert review.put(bob, story, ["waiting_time"]).status_code == 422
    again = client.post(
        PROPOSALS,
        json={"incident_id": other, "key": "waiting_time", "label": "W"},
        headers=bob.headers,
    )
    assert again.status_code == 409
    taken = client.post(
        PROPOSALS,
        json={"incident_id": other, "key": "complaint", "label": "C"},
        headers=bob.headers,
    )
    assert taken.status_code == 409

    mine = review.code(alice, story, ["waiting_time", "complaint"])
    proposed = {c["code"]: c["proposed"] for c in mine["codes"]}
    assert proposed == {"waiting_time": True, "complaint": False}
    # The story waits for the decision instead of becoming final with an unknown code.
    assert mine["incident_status"] == "in_review"
    queue = client.get("/api/v1/review/surveys", headers=alice.headers).json()
    assert queue[0]["waiting_for_proposals"] == 1

    accepted = client.post(
        f"{PROPOSALS}/{proposal['id']}/accept",
        json={"label": "Waiting time", "note": "seen in many stories"},
        headers=admin_person.headers,
    )
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["status"] == "accepted"
    codebook = client.get(f"/api/v1/codebooks/{codebook_id}", headers=alice.headers).json()
    assert codebook["current_version"] == 2
    new = {c["key"]: c for c in codebook["version"]["content"]["codes"]}["waiting_time"]
    assert new["label"] == "Waiting time" and new["definition"] == "new"
    assert new["examples"] and "rebooked" in new["examples"][0]  # the story, redacted
    after = _coding(client, alice, story)
    assert after["incident_status"] == "coded"
    assert {c["code"]: c["proposed"] for c in after["codes"]} == {
        "waiting_time": False,
        "complaint": False,
    }
    assert after["history"][0]["reason"] == "proposal_accepted"
    assert after["notifications"][0]["kind"] == "proposal_accepted"
    # Everyone may use it now.
    review.code(bob, other, ["waiting_time"])
    decided = client.post(
        f"{PROPOSALS}/{proposal['id']}/reject", json={}, headers=admin_person.headers
    )
    assert decided.status_code == 409


def test_rejecting_a_proposed_code_reverts_codings_and_tells_the_coder(
    client: TestClient,
    review: Review,
    person: Callable[..., Person],
    admin_person: Person,
    survey: Survey,
    make_story: Any,
) -> None:
    alice = person(name="alice")
    kept, emptied = make_story(survey), make_story(survey)
    proposal = _propose(client, alice, kept, "rudeness")
    review.code(alice, kept, ["rudeness", "complaint"])
    review.code(alice, emptied, ["rudeness"])
    denied = client.post(f"{PROPOSALS}/{proposal['id']}/reject", json={}, headers=alice.headers)
    assert denied.status_code == 403
    rejected = client.post(
        f"{PROPOSALS}/{proposal['id']}/reject",
        json={"note": "covered by complaint"},
        headers=admin_person.headers,
    )
    assert rejected.status_code == 200, rejected.text
    first = _coding(client, alice, kept)
    assert [c["code"] for c in first["codes"]] == ["complaint"]
    assert first["incident_status"] == "coded"
    assert first["history"][-1]["codes"] == [
        {"code": "rudeness", "decision": "added"},
        {"code": "complaint", "decision": "added"},
    ]
    assert "covered by complaint" in first["notifications"][0]["message"]
    second = _coding(client, alice, emptied)
    assert second["codes"] == [] and second["incident_status"] == "in_review"
    progress = client.get("/api/v1/review/progress", headers=alice.headers).json()
    assert progress["needs_revision"] == [emptied]
    assert {n["incident_id"] for n in progress["notifications"]} == {kept, emptied}
    # The coder codes it again; reading the notification marks it read.
    review.code(alice, emptied, ["complaint"])
    note = progress["notifications"][0]["id"]
    read = client.post(f"/api/v1/review/notifications/{note}/read", headers=alice.headers)
    assert read.status_code == 200 and read.json()["read_at"] is not None
    after = client.get("/api/v1/review/progress", headers=alice.headers).json()
    assert after["needs_revision"] == [] and len(after["notifications"]) == 1


def test_merging_a_proposed_code_into_an_existing_one(
    client: TestClient,
    review: Review,
    person: Callable[..., Person],
    admin_person: Person,
    make_survey: Callable[..., Survey],
    codebook_id: int,
    make_story: Any,
) -> None:
    survey = make_survey(codebook_id=codebook_id, double_coding_share=100)
    alice, bob = person(name="alice"), person(name="bob")
    story = make_story(survey)
    proposal = _propose(client, alice, story, "went_beyond")
    review.code(alice, story, ["went_beyond"])
    review.code(bob, story, ["extra_mile"])
    assert review.status(admin_person, story) == "in_review"  # waits for the decision
    merged = client.post(
        f"{PROPOSALS}/{proposal['id']}/merge",
        json={"into": "extra_mile"},
        headers=admin_person.headers,
    )
    assert merged.status_code == 200, merged.text
    # Under one mapping the two coders agree: the story is final without adjudication.
    assert review.status(admin_person, story) == "coded"
    bad = _propose(client, alice, story, "other_idea")
    wrong = client.post(
        f"{PROPOSALS}/{bad['id']}/merge", json={"into": "nope"}, headers=admin_person.headers
    )
    assert wrong.status_code == 400


def test_a_merge_maps_coder_codings_so_a_disagreement_becomes_agreement(
    client: TestClient,
    review: Review,
    person: Callable[..., Person],
    admin_person: Person,
    make_survey: Callable[..., Survey],
    codebook_id: int,
    make_story: Any,
) -> None:
    survey = make_survey(codebook_id=codebook_id, double_coding_share=100)
    alice, bob = person(name="alice"), person(name="bob")
    story, renamed = make_story(survey), make_story(survey)
    review.code(alice, story, ["complaint"])
    review.code(bob, story, ["owner_error"])
    assert review.status(admin_person, story) == "adjudication"
    review.code(alice, renamed, ["owner_error"])  # bob codes it after the change
    change = client.post(
        f"/api/v1/codebooks/{codebook_id}/changes",
        json={
            "operations": [
                {"op": "rename", "from": "owner_error", "to": "customer_error"},
                {"op": "merge", "from": ["complaint", "customer_error"], "into": "problem"},
            ],
            "change_note": "one problem code",
        },
        headers=admin_person.headers,
    )
    assert change.status_code == 200, change.text
    assert review.status(admin_person, story) == "coded"
    mine = _coding(client, bob, story)
    assert [c["code"] for c in mine["codes"]] == ["problem"]
    assert mine["history"][0]["codes"] == [{"code": "owner_error", "decision": "added"}]
    assert mine["history"][0]["reason"] == "codebook_change"
    # The old key is retired: bob codes under the new version, and agrees with alice.
    assert review.put(bob, renamed, ["owner_error"]).status_code == 422
    review.code(bob, renamed, ["problem"])
    assert review.status(admin_person, renamed) == "coded"
    report = client.get(
        "/api/v1/reports/agreement", params={"survey_id": survey.id}, headers=admin_person.headers
    ).json()
    # One code under one mapping; retired and unused codes are out of the means.
    assert report["overall_codes"] == ["problem"]
    assert report["per_code"]["problem"]["percent_agreement"]["value"] == 1.0
    assert report["story_level"]["exclusion_missing"]["share"] == 1.0


def test_no_code_applies_and_chosen_double_coding(
    client: TestClient,
    review: Review,
    person: Callable[..., Person],
    admin_person: Person,
    survey: Survey,
    make_story: Any,
) -> None:
    alice, bob = person(name="alice"), person(name="bob")
    picked, left, final = make_story(survey), make_story(survey), make_story(survey)
    review.code(alice, final, ["complaint"])
    chosen = client.post(
        "/api/v1/review/double-coding",
        json={"incident_ids": [picked, final]},
        headers=admin_person.headers,
    )
    assert chosen.status_code == 200, chosen.text
    body = chosen.json()
    assert body["updated"] == [picked] and body["skipped"][0]["incident_id"] == final
    assert (
        client.post(
            "/api/v1/review/double-coding", json={"incident_ids": [left]}, headers=alice.headers
        ).status_code
        == 403
    )
    by_filter = client.post(
        "/api/v1/review/double-coding",
        json={"filter": {"survey_id": survey.id, "valence": "satisfying"}},
        headers=admin_person.headers,
    ).json()
    assert by_filter["updated"] == [left] and by_filter["unchanged"] == [picked]
    counts = client.get(
        "/api/v1/review/surveys", params={"survey_id": survey.id}, headers=alice.headers
    ).json()[0]
    assert counts["double_coded"] == 2 and counts["by_status"]["coded"] == 1

    body_none = {"no_code_applies": True}
    etag = review.read(alice, picked)[1]
    first = client.put(
        f"/api/v1/incidents/{picked}/codings/me",
        json=body_none,
        headers={**alice.headers, "If-Match": etag},
    )
    assert first.status_code == 200 and first.json()["no_code_applies"] is True
    both = client.put(
        f"/api/v1/incidents/{picked}/codings/me",
        json={**body_none, "codes": [{"code": "complaint"}]},
        headers={**bob.headers, "If-Match": review.read(bob, picked)[1]},
    )
    assert both.status_code == 422
    second = client.put(
        f"/api/v1/incidents/{picked}/codings/me",
        json=body_none,
        headers={**bob.headers, "If-Match": review.read(bob, picked)[1]},
    )
    assert second.status_code == 200
    story = review.read(admin_person, picked)[0]
    assert story["status"] == "coded" and story["final_codes"] == []


def test_parents_not_codable_and_agreement_at_parent_level(
    client: TestClient,
    review: Review,
    person: Callable[..., Person],
    admin_person: Person,
    make_survey: Callable[..., Survey],
    make_story: Any,
) -> None:
    content = {
        "key": "grouped",
        "name": "Grouped",
        "codes": [
            {"key": "failure", "label": "Failure", "codable": False},
            {"key": "delay", "label": "Delay", "parent": "failure"},
            {"key": "loss", "label": "Loss", "parent": "failure"},
            {"key": "praise", "label": "Praise"},
        ],
    }
    created = client.post(
        "/api/v1/codebooks", json={"content": content}, headers=admin_person.headers
    )
    assert created.status_code == 201, created.text
    survey = make_survey(codebook_id=created.json()["id"], double_coding_share=100)
    alice, bob = person(name="alice"), person(name="bob")
    stories = [make_story(survey) for _ in range(3)]
    refused = review.put(alice, stories[0], ["failure"])
    assert refused.status_code == 422
    assert "parent category, not codable" in refused.json()["errors"][0]["msg"]
    for story, (a, b) in zip(
        stories,
        [(["delay"], ["loss"]), (["delay"], ["delay"]), (["praise"], ["praise"])],
        strict=True,
    ):
        review.code(alice, story, a)
        review.code(bob, story, b)
    report = client.get(
        "/api/v1/reports/agreement", params={"survey_id": survey.id}, headers=alice.headers
    ).json()
    assert "failure" not in report["codes"]  # not codable: no leaf-level figure
    assert report["per_code"]["delay"]["percent_agreement"]["value"] == 2 / 3
    parent = report["parent_level"]
    assert parent["available"] is True and parent["children"]["failure"] == ["delay", "loss"]
    # delay vs loss disagree on the leaf, agree on the parent.
    rolled = parent["section"]["per_code"]["failure"]["percent_agreement"]
    assert (rolled["value"], rolled["n_units"]) == (1.0, 3)
    assert parent["section"]["story_level"]["exclusion_missing"]["share"] == 1.0


def test_a_lease_on_a_double_coded_story_leaves_room_for_the_second_coder(
    client: TestClient,
    review: Review,
    person: Callable[..., Person],
    make_survey: Callable[..., Survey],
    codebook_id: int,
    make_story: Any,
) -> None:
    survey = make_survey(codebook_id=codebook_id, double_coding_share=100)
    alice, bob, carol = person(), person(), person()
    story = make_story(survey)
    assert review.next_id(alice) == story
    review.code(bob, story, ["complaint"])  # one place left: alice holds it
    taken = review.put(carol, story, ["complaint"])
    assert taken.status_code == 409 and alice.name in taken.json()["detail"]
