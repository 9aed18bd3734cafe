"""Coding stories: ETag preconditions, validation, single coding, blind double coding,
agreement, disagreement and adjudication, exclusion, revisions, roles."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from app.models import Coding, CodingCode, Incident, IncidentCode, Survey

PROBLEM = "application/problem+json"


def _final(db: Callable[[], Any], incident_id: int) -> list[tuple[str, str, str]]:
    with db() as session:
        rows = session.execute(
            select(IncidentCode.code, IncidentCode.source, IncidentCode.confirmed_by)
            .where(IncidentCode.incident_id == incident_id)
            .order_by(IncidentCode.code)
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def test_etag_preconditions(
    client: TestClient, review: Any, person: Callable[..., Any], survey: Survey, make_story: Any
) -> None:
    story = make_story(survey)
    alice = person(name="alice")
    body = {"codes": [{"code": "extra_mile", "origin": "suggestion"}]}
    url = f"/api/v1/incidents/{story}/codings/me"

    read, etag = review.read(alice, story)
    assert etag == f'"{read["version"]}.0"' == '"1.0"'

    missing = client.put(url, json=body, headers=alice.headers)
    assert missing.status_code == 428 and missing.headers["content-type"] == PROBLEM
    assert missing.json()["type"] == "/problems/precondition-required"
    assert missing.headers["ETag"] == '"1.0"'

    stale = client.put(url, json=body, headers={**alice.headers, "If-Match": '"7"'})
    assert stale.status_code == 412 and stale.headers["content-type"] == PROBLEM
    weak = client.put(url, json=body, headers={**alice.headers, "If-Match": 'W/"1"'})
    assert weak.status_code == 412
    assert client.get(url, headers=alice.headers).status_code == 404  # nothing was written

    ok = client.put(url, json=body, headers={**alice.headers, "If-Match": etag})
    assert ok.status_code == 200, ok.text
    # Final now (one coder needed): the story's version moves, and so does alice's revision.
    assert ok.headers["ETag"] == ok.json()["etag"] == '"2.1"'
    assert ok.json()["incident_version"] == 2

    # The old ETag is stale now: the write changes nothing.
    again = client.put(
        url,
        json={"codes": [{"code": "complaint", "origin": "manual"}]},
        headers={**alice.headers, "If-Match": etag},
    )
    assert again.status_code == 412 and again.headers["ETag"] == '"2.1"'
    mine = client.get(url, headers=alice.headers)
    assert mine.status_code == 200 and mine.headers["ETag"] == '"2.1"'
    assert mine.json()["codes"] == [
        {
            "code": "extra_mile",
            "origin": "suggestion",
            "spans": [],
            "proposed": False,
            "proposal_id": None,
        }
    ]


def test_payload_and_code_validation(
    client: TestClient, review: Any, person: Callable[..., Any], survey: Survey, make_story: Any
) -> None:
    story = make_story(survey)
    alice = person()

    unknown = review.put(alice, story, ["complaint", "teleportation", "rude_staff"])
    assert unknown.status_code == 422 and unknown.headers["content-type"] == PROBLEM
    assert unknown.json()["unknown_codes"] == ["teleportation", "rude_staff"]
    assert "teleportation" in unknown.json()["detail"]

    rejected_unknown = review.put(alice, story, ["complaint"], rejected=["nope"])
    assert rejected_unknown.status_code == 422
    assert rejected_unknown.json()["errors"][0]["loc"] == ["body", "rejected_suggestions"]

    overlap = review.put(alice, story, ["complaint"], rejected=["complaint"])
    assert overlap.status_code == 422 and "both given and rejected" in overlap.text

    etag = review.read(alice, story)[1]
    url = f"/api/v1/incidents/{story}/codings/me"
    headers = {**alice.headers, "If-Match": etag}
    bodies: tuple[dict[str, Any], ...] = (
        {"codes": []},  # neither codes nor an exclusion
        {"exclude": True},  # no reason
        {"exclude": True, "exclusion_reason": "x", "codes": [{"code": "complaint"}]},
        {"codes": [{"code": "complaint"}, {"code": "complaint"}]},
        {"codes": [{"code": "complaint", "origin": "guess"}]},
        {"codes": [{"code": "complaint"}], "exclusion_reason": "why"},
        {"codes": [{"code": "complaint"}], "extra": 1},
    )
    for body in bodies:
        response = client.put(url, json=body, headers=headers)
        assert response.status_code == 422, body
    assert client.put(url.replace(str(story), "999999"), json={}, headers=headers).status_code in (
        404,
        422,
    )
    missing = client.put(
        url.replace(str(story), "999999"),
        json={"codes": [{"code": "complaint"}]},
        headers=headers,
    )
    assert missing.status_code == 404
    assert review.status(alice, story) == "new"


def test_single_coding_is_final_and_can_be_revised(
    review: Any, person: Callable[..., Any], survey: Survey, make_story: Any, db: Any
) -> None:
    story = make_story(survey)
    alice = person(name="alice")
    saved = review.code(alice, story, ["extra_mile", "special_request"], rejected=["complaint"])
    assert saved["incident_status"] == "coded"
    assert {c["code"] for c in saved["codes"]} == {"extra_mile", "special_request"}
    assert saved["rejected_suggestions"] == ["complaint"]
    assert _final(db, story) == [
        ("extra_mile", "review", "alice"),
        ("special_request", "review", "alice"),
    ]
    read = review.read(alice, story)[0]
    assert read["status"] == "coded" and read["coders_required"] == 1
    assert read["finalized_at"] is not None
    assert [c["coder"] for c in read["codings"]] == ["alice"]
    with db() as session:
        version_id = session.scalar(select(Coding.codebook_version_id))
        assert session.scalar(select(IncidentCode.codebook_version_id).limit(1)) == version_id

    # The coder revises: the final codes follow.
    revised = review.code(alice, story, ["complaint"], note="misread it")
    assert revised["incident_status"] == "coded" and revised["note"] == "misread it"
    assert _final(db, story) == [("complaint", "review", "alice")]
    with db() as session:
        decisions = session.scalars(select(CodingCode.decision)).all()
    assert decisions == ["added"]

    # Somebody else cannot add a coding to a final single-coded story.
    bob = person(name="bob")
    late = review.put(bob, story, ["complaint"])
    assert late.status_code == 409 and late.headers["content-type"] == PROBLEM


def test_blind_double_coding_agreement(
    client: TestClient,
    review: Any,
    person: Callable[..., Any],
    make_survey: Callable[..., Survey],
    codebook_id: int,
    make_story: Any,
    db: Any,
    admin_person: Any,
) -> None:
    survey = make_survey(codebook_id=codebook_id, double_coding_share=100)
    story = make_story(survey)
    alice, bob, carol = person(name="alice"), person(name="bob"), person(name="carol")

    first = review.code(alice, story, ["complaint", "owner_error"])
    assert first["incident_status"] == "in_review"
    assert _final(db, story) == []

    # Blind: bob and carol see no coding, alice only her own; the admin sees all.
    assert review.read(bob, story)[0]["codings"] == []
    assert review.read(carol, story)[0]["codings"] == []
    assert [c["coder"] for c in review.read(alice, story)[0]["codings"]] == ["alice"]
    assert [c["coder"] for c in review.read(admin_person, story)[0]["codings"]] == ["alice"]
    listed = client.get("/api/v1/incidents", headers=bob.headers).json()["items"]
    assert listed[0]["codings"] == []
    assert client.get(f"/api/v1/incidents/{story}/codings/me", headers=bob.headers).status_code == (
        404
    )

    second = review.code(bob, story, ["owner_error", "complaint"])
    assert second["incident_status"] == "coded"
    assert _final(db, story) == [
        ("complaint", "agreement", "alice, bob"),
        ("owner_error", "agreement", "alice, bob"),
    ]
    # Both submitted: now every coder (and other researchers) may see both codings.
    assert {c["coder"] for c in review.read(alice, story)[0]["codings"]} == {"alice", "bob"}
    assert {c["coder"] for c in review.read(carol, story)[0]["codings"]} == {"alice", "bob"}

    third = review.put(carol, story, ["complaint"])
    assert third.status_code == 409


def test_disagreement_goes_to_adjudication(
    client: TestClient,
    review: Any,
    person: Callable[..., Any],
    make_survey: Callable[..., Survey],
    codebook_id: int,
    make_story: Any,
    db: Any,
    admin_person: Any,
) -> None:
    survey = make_survey(codebook_id=codebook_id, double_coding_share=100)
    story, other = make_story(survey), make_story(survey)
    alice, bob = person(name="alice"), person(name="bob")
    review.code(alice, story, ["complaint"])
    assert review.code(bob, story, ["extra_mile"])["incident_status"] == "adjudication"
    assert _final(db, story) == []
    review.code(alice, other, ["complaint"])

    # Researchers may not adjudicate, nor list the adjudication queue.
    forbidden = review.adjudicate(alice, story, {"codes": ["complaint"]})
    assert forbidden.status_code == 403 and forbidden.headers["content-type"] == PROBLEM
    assert client.get("/api/v1/review/adjudication", headers=alice.headers).status_code == 403

    queue = client.get("/api/v1/review/adjudication", headers=admin_person.headers).json()
    assert [i["id"] for i in queue["items"]] == [story]
    assert {c["coder"] for c in queue["items"][0]["codings"]} == {"alice", "bob"}
    assert queue["items"][0]["view"] == "original"

    # Nothing to adjudicate on a story still waiting for its second coding.
    waiting = review.adjudicate(admin_person, other, {"codes": ["complaint"]})
    assert waiting.status_code == 409

    no_etag = client.put(
        f"/api/v1/incidents/{story}/adjudication",
        json={"codes": ["complaint"]},
        headers=admin_person.headers,
    )
    assert no_etag.status_code == 428
    unknown = review.adjudicate(admin_person, story, {"codes": ["complaint", "bogus"]})
    assert unknown.status_code == 422 and unknown.json()["unknown_codes"] == ["bogus"]

    decided = review.adjudicate(
        admin_person, story, {"codes": ["complaint", "extra_mile"], "note": "both apply"}
    )
    assert decided.status_code == 200, decided.text
    assert decided.json()["status"] == "coded"
    assert decided.headers["ETag"] == f'"{decided.json()["version"]}.0"'
    assert _final(db, story) == [
        ("complaint", "adjudication", "the-admin"),
        ("extra_mile", "adjudication", "the-admin"),
    ]
    assert (
        client.get("/api/v1/review/adjudication", headers=admin_person.headers).json()["items"]
        == []
    )

    # After adjudication the admin's decision stands: a coder's revision is refused.
    refused = review.put(alice, story, ["extra_mile"])
    assert refused.status_code == 409
    assert _final(db, story)[0][1] == "adjudication"

    # The admin may exclude it instead, later.
    excluded = review.adjudicate(
        admin_person, story, {"exclude": True, "exclusion_reason": "two episodes"}
    )
    assert excluded.status_code == 200
    assert excluded.json()["status"] == "excluded"
    assert excluded.json()["exclusion_reason"] == "two episodes"
    assert _final(db, story) == []


def test_a_coder_revising_resolves_or_reopens_a_disagreement(
    review: Any,
    person: Callable[..., Any],
    make_survey: Callable[..., Survey],
    codebook_id: int,
    make_story: Any,
    db: Any,
) -> None:
    survey = make_survey(codebook_id=codebook_id, double_coding_share=100)
    story = make_story(survey)
    alice, bob = person(name="alice"), person(name="bob")
    review.code(alice, story, ["complaint"])
    review.code(bob, story, ["extra_mile"])
    assert review.code(bob, story, ["complaint"])["incident_status"] == "coded"
    assert _final(db, story) == [("complaint", "agreement", "alice, bob")]
    # A final story's codes are recomputed when a coder revises: now they disagree again.
    assert review.code(alice, story, ["owner_error"])["incident_status"] == "adjudication"
    assert _final(db, story) == []
    with db() as session:
        incident = session.get(Incident, story)
        assert incident is not None and incident.finalized_at is None


def test_exclusion(
    review: Any,
    person: Callable[..., Any],
    make_survey: Callable[..., Survey],
    codebook_id: int,
    make_story: Any,
    db: Any,
) -> None:
    single = make_survey(codebook_id=codebook_id)
    double = make_survey(codebook_id=codebook_id, double_coding_share=100)
    alice, bob = person(name="alice"), person(name="bob")

    one = make_story(single)
    saved = review.exclude(alice, one, "not one discrete episode")
    assert saved["excluded"] and saved["codes"] == []
    read = review.read(alice, one)[0]
    assert read["status"] == "excluded"
    assert read["exclusion_reason"] == "not one discrete episode"

    both = make_story(double)
    review.exclude(alice, both, "no interaction")
    review.exclude(bob, both, "not enough detail")
    read = review.read(alice, both)[0]
    assert read["status"] == "excluded"
    assert read["exclusion_reason"] == "no interaction / not enough detail"
    assert _final(db, both) == []

    split = make_story(double)
    review.exclude(alice, split, "no interaction")
    assert review.code(bob, split, ["complaint"])["incident_status"] == "adjudication"


def test_roles(
    client: TestClient,
    review: Any,
    person: Callable[..., Any],
    survey: Survey,
    make_story: Any,
) -> None:
    story = make_story(survey)
    viewer = person("viewer")
    for method, url in (
        ("get", "/api/v1/incidents"),
        ("get", f"/api/v1/incidents/{story}"),
        ("get", f"/api/v1/incidents/{story}/codings/me"),
        ("put", f"/api/v1/incidents/{story}/codings/me"),
        ("post", "/api/v1/review/next"),
        ("get", "/api/v1/review/progress"),
        ("get", "/api/v1/review/adjudication"),
        ("put", f"/api/v1/incidents/{story}/adjudication"),
        ("get", f"/api/v1/incidents/{story}/audit"),
        ("get", "/api/v1/audit"),
        ("post", "/api/v1/review/assignments"),
    ):
        response = client.request(
            method,
            url,
            headers={**viewer.headers, "If-Match": '"1"'},
            json={"codes": [{"code": "complaint"}]} if method == "put" else None,
        )
        assert response.status_code == 403, (method, url, response.status_code)
        assert response.headers["content-type"] == PROBLEM
    assert client.get("/api/v1/reports/agreement", headers=viewer.headers).status_code == 200
    assert client.get("/api/v1/reports/agreement").status_code == 401
    assert client.post("/api/v1/review/next").status_code == 401

    researcher = person()
    assert client.get("/api/v1/audit", headers=researcher.headers).status_code == 403
    assert (
        client.get(
            f"/api/v1/incidents/{story}?view=original", headers=researcher.headers
        ).status_code
        == 403
    )
    assert (
        client.get(
            "/api/v1/review/progress?researcher=someone", headers=researcher.headers
        ).status_code
        == 403
    )


def test_admins_code_too_and_read_original_text(
    review: Any, admin_person: Any, survey: Survey, make_story: Any
) -> None:
    story = make_story(survey, what_happened="Mail me at jane@example.com please.")
    item = review.next(admin_person)
    assert item is not None and item["incident"]["view"] == "original"
    assert "jane@example.com" in item["incident"]["what_happened"]
    assert review.code(admin_person, story, ["special_request"])["incident_status"] == "coded"


def test_openapi_documents_the_review_api(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    assert "/api/v1/review/next" in paths
    put = paths["/api/v1/incidents/{incident_id}/codings/me"]["put"]
    assert {"412", "422", "428", "409"} <= set(put["responses"])
    assert any(p["name"] == "if-match" for p in put["parameters"])
    assert "/api/v1/reports/agreement" in paths and "/api/v1/audit" in paths
    assert set(paths["/api/v1/audit"]) == {"get"}
    assert "204" in paths["/api/v1/review/next"]["post"]["responses"]


def test_the_second_blind_coder_is_neither_refused_nor_told(
    client: TestClient,
    review: Any,
    person: Callable[..., Any],
    make_survey: Callable[..., Survey],
    codebook_id: int,
    make_story: Any,
) -> None:
    """Both coders open the story, the first saves: the second's ETag is still valid (no 412,
    and no sign that someone answered), while the first coder's other tab is stale."""
    story = make_story(make_survey(codebook_id=codebook_id, double_coding_share=100))
    alice, bob = person(name="alice"), person(name="bob")
    alice_tag = review.read(alice, story)[1]
    bob_tag = review.read(bob, story)[1]
    assert alice_tag == bob_tag == '"1.0"'

    saved = review.put(alice, story, ["complaint"], etag=alice_tag)
    assert saved.status_code == 200, saved.text
    assert saved.headers["ETag"] == '"1.1"'
    assert review.read(bob, story)[1] == bob_tag  # nothing tells bob that alice answered
    assert review.read(bob, story)[0]["status"] == "new"  # ... not even the status
    assert review.read(alice, story)[0]["status"] == "in_review"

    def listed(who: Any, status: str) -> list[int]:
        page = client.get("/api/v1/incidents", params={"status": status}, headers=who.headers)
        return [item["id"] for item in page.json()["items"]]

    assert listed(bob, "in_review") == [] and listed(bob, "new") == [story]
    assert listed(alice, "in_review") == [story] and listed(alice, "new") == []

    other_tab = review.put(alice, story, ["extra_mile"], etag=alice_tag)
    assert other_tab.status_code == 412 and other_tab.headers["ETag"] == '"1.1"'

    second = review.put(bob, story, ["complaint"], etag=bob_tag)
    assert second.status_code == 200, second.text
    assert second.json()["incident_status"] == "coded"
    # Final now: the story's version moved for everyone.
    assert review.read(alice, story)[1] == '"2.1"' and second.headers["ETag"] == '"2.1"'
