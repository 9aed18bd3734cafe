"""The coding path answers from what it wrote instead of reading it back (issue 11): the answer
of PUT codings/me must be exactly what GET codings/me reads afterwards, for a new coding and a
revision, with several codes, a rejected suggestion and spans; the audit trail records the
story's final codes in the database's order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from app.models import AuditEvent, Survey

WHAT = "The agent called me back within the hour and fixed the booking."


def _save(client: TestClient, who: Any, story: int, body: dict[str, Any]) -> Any:
    etag = client.get(f"/api/v1/incidents/{story}", headers=who.headers).headers["ETag"]
    return client.put(
        f"/api/v1/incidents/{story}/codings/me",
        json=body,
        headers={**who.headers, "If-Match": etag},
    )


def test_the_saved_coding_answers_what_a_read_returns(
    client: TestClient,
    person: Callable[..., Any],
    survey: Survey,
    make_story: Callable[..., int],
    db: Callable[[], Any],
) -> None:
    story = make_story(survey, what_happened=WHAT)
    alice = person(name="alice")
    phrase = "called me back"
    start = WHAT.index(phrase)
    first = {
        "codes": [
            {
                "code": "extra_mile",
                "origin": "manual",
                "spans": [{"field": "what_happened", "start": start, "end": start + len(phrase)}],
            },
            {"code": "complaint", "origin": "suggestion"},
        ],
        "rejected_suggestions": ["owner_error"],
        "note": "first pass",
    }
    for body in (first, {**first, "codes": first["codes"][:1], "note": "revised"}):
        saved = _save(client, alice, story, body)
        assert saved.status_code == 200, saved.text
        read = client.get(f"/api/v1/incidents/{story}/codings/me", headers=alice.headers)
        assert read.status_code == 200, read.text
        assert saved.json() == read.json()
        assert saved.headers["ETag"] == read.headers["ETag"] == saved.json()["etag"]
    assert saved.json()["codes"][0]["spans"][0]["text"] == phrase
    assert saved.json()["note"] == "revised" and saved.json()["incident_status"] == "coded"

    with db() as session:
        events = session.scalars(
            select(AuditEvent)
            .where(AuditEvent.entity_id == str(story), AuditEvent.entity_type == "incident")
            .order_by(AuditEvent.id)
        ).all()
    actions = [e.action for e in events]
    assert actions[-4:] == ["coding.create", "incident.coded", "coding.update", "incident.coded"]
    # Two codes, then one: the recorded final codes in the order the database sorts them.
    assert events[-3].after is not None and events[-3].after["final_codes"] == sorted(
        ["complaint", "extra_mile"]
    )
    assert events[-1].after is not None and events[-1].after["final_codes"] == ["extra_mile"]
    assert events[-2].before is not None and [c["code"] for c in events[-2].before["codes"]] == [
        "extra_mile",
        "complaint",
        "owner_error",
    ]
