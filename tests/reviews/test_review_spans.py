"""Human-chosen spans: `codes[].spans` in a coding, checked against the text the coder reads,
stored in original offsets, read back in each reader's view (never leaking redacted data)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from app.models import AuditEvent, CodingSpan, Survey

PROBLEM = "application/problem+json"
EMAIL = "jane.doe@example.com"
WHAT = f"I wrote to {EMAIL} and the agent called me back within the hour."


def _put(
    client: TestClient, who: Any, story: int, codes: list[dict[str, Any]], **params: str
) -> Any:
    etag = client.get(f"/api/v1/incidents/{story}", headers=who.headers).headers["ETag"]
    return client.put(
        f"/api/v1/incidents/{story}/codings/me",
        params=params,
        json={"codes": codes},
        headers={**who.headers, "If-Match": etag},
    )


def test_a_researcher_marks_a_span_in_the_redacted_text_and_reads_it_back(
    client: TestClient,
    person: Callable[..., Any],
    admin_person: Any,
    survey: Survey,
    make_story: Callable[..., int],
    db: Callable[[], Any],
) -> None:
    story = make_story(survey, what_happened=WHAT)
    alice = person(name="alice")
    read = client.get(f"/api/v1/incidents/{story}", headers=alice.headers).json()
    redacted = read["what_happened"]
    assert EMAIL not in redacted and "[EMAIL]" in redacted
    phrase = "the agent called me back"
    start = redacted.index(phrase)
    response = _put(
        client,
        alice,
        story,
        [
            {
                "code": "extra_mile",
                "origin": "manual",
                "spans": [
                    {"field": "what_happened", "start": start, "end": start + len(phrase)},
                    # the same passage twice is kept once
                    {"field": "what_happened", "start": start, "end": start + len(phrase)},
                    {"field": "outcome", "start": 0, "end": 1},
                ],
            }
        ],
    )
    assert response.status_code == 200, response.text
    spans = response.json()["codes"][0]["spans"]
    assert spans[0] == {
        "field": "what_happened",
        "start": start,
        "end": start + len(phrase),
        "text": phrase,
    }
    assert len(spans) == 2 and spans[1]["text"] == "I"

    # Stored in original offsets: the e-mail address is longer than its placeholder.
    with db() as session:
        stored = session.scalars(select(CodingSpan).order_by(CodingSpan.id)).all()
        assert (stored[0].field, stored[0].start, stored[0].end) == (
            "what_happened",
            WHAT.index(phrase),
            WHAT.index(phrase) + len(phrase),
        )
        audit = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "coding.create")
        ).one()
        assert audit.after is not None
        assert audit.after["codes"][0]["spans"][0][0] == "what_happened"

    # The admin reads the same span in the original text; the researcher again redacted.
    mine = client.get(f"/api/v1/incidents/{story}/codings/me", headers=alice.headers).json()
    assert mine["codes"][0]["spans"][0]["text"] == phrase
    as_admin = client.get(f"/api/v1/incidents/{story}", headers=admin_person.headers).json()
    admin_span = as_admin["codings"][0]["codes"][0]["spans"][0]
    assert admin_span["text"] == phrase and admin_span["start"] == WHAT.index(phrase)


def test_a_span_over_a_placeholder_never_shows_the_redacted_data_to_researchers(
    client: TestClient,
    person: Callable[..., Any],
    admin_person: Any,
    survey: Survey,
    make_story: Callable[..., int],
) -> None:
    story = make_story(survey, what_happened=WHAT)
    # An admin marks part of the e-mail address in the original text...
    start = WHAT.index("doe")
    response = _put(
        client,
        admin_person,
        story,
        [
            {
                "code": "complaint",
                "spans": [{"field": "what_happened", "start": start, "end": start + 3}],
            }
        ],
    )
    assert response.status_code == 200, response.text
    assert response.json()["codes"][0]["spans"][0]["text"] == "doe"
    # ...a researcher reading the (now final) story sees the whole placeholder instead.
    alice = person(name="alice")
    read = client.get(f"/api/v1/incidents/{story}", headers=alice.headers).json()
    span = read["codings"][0]["codes"][0]["spans"][0]
    assert span["text"] == "[EMAIL]"
    assert read["what_happened"][span["start"] : span["end"]] == "[EMAIL]"
    assert EMAIL not in str(read)


def test_spans_that_do_not_fit_are_refused_and_nothing_is_saved(
    client: TestClient, person: Callable[..., Any], survey: Survey, make_story: Callable[..., int]
) -> None:
    story = make_story(survey, what_happened="Short.", outcome=None)
    alice = person(name="alice")
    past_end = _put(
        client,
        alice,
        story,
        [{"code": "complaint", "spans": [{"field": "what_happened", "start": 0, "end": 99}]}],
    )
    assert past_end.status_code == 422 and past_end.headers["content-type"] == PROBLEM
    assert past_end.json()["errors"][0]["loc"] == ["body", "codes", 0, "spans", 0]
    assert "6 characters long" in past_end.json()["errors"][0]["msg"]
    no_field = _put(
        client,
        alice,
        story,
        [{"code": "complaint", "spans": [{"field": "outcome", "start": 0, "end": 1}]}],
    )
    assert no_field.status_code == 422 and "no outcome" in no_field.json()["detail"]
    backwards = _put(
        client,
        alice,
        story,
        [{"code": "complaint", "spans": [{"field": "what_happened", "start": 3, "end": 2}]}],
    )
    assert backwards.status_code == 422
    unknown_field = _put(
        client,
        alice,
        story,
        [{"code": "complaint", "spans": [{"field": "attributes", "start": 0, "end": 1}]}],
    )
    assert unknown_field.status_code == 422
    assert (
        client.get(f"/api/v1/incidents/{story}/codings/me", headers=alice.headers).status_code
        == 404
    )


def test_an_admin_may_give_offsets_into_the_redacted_text(
    client: TestClient, admin_person: Any, survey: Survey, make_story: Callable[..., int]
) -> None:
    story = make_story(survey, what_happened=WHAT)
    redacted = client.get(
        f"/api/v1/incidents/{story}", params={"view": "redacted"}, headers=admin_person.headers
    ).json()["what_happened"]
    start = redacted.index("[EMAIL]")
    response = _put(
        client,
        admin_person,
        story,
        [
            {
                "code": "complaint",
                "spans": [{"field": "what_happened", "start": start, "end": start + 7}],
            }
        ],
        view="redacted",
    )
    assert response.status_code == 200, response.text
    assert response.json()["codes"][0]["spans"][0]["text"] == "[EMAIL]"
    original = client.get(f"/api/v1/incidents/{story}/codings/me", headers=admin_person.headers)
    assert original.json()["codes"][0]["spans"][0]["text"] == EMAIL


def test_revising_a_coding_replaces_its_spans(
    client: TestClient,
    person: Callable[..., Any],
    survey: Survey,
    make_story: Callable[..., int],
    set_incident: Callable[..., None],
) -> None:
    story = make_story(survey)
    set_incident([story], coders_required=2)
    alice = person(name="alice")
    first = _put(
        client,
        alice,
        story,
        [{"code": "extra_mile", "spans": [{"field": "what_happened", "start": 0, "end": 9}]}],
    )
    assert first.status_code == 200, first.text
    second = _put(
        client,
        alice,
        story,
        [
            {"code": "complaint"},
            {"code": "extra_mile", "spans": [{"field": "outcome", "start": 2, "end": 6}]},
        ],
    )
    assert second.status_code == 200, second.text
    codes = {c["code"]: c["spans"] for c in second.json()["codes"]}
    assert codes == {
        "complaint": [],
        "extra_mile": [{"field": "outcome", "start": 2, "end": 6, "text": "made"}],
    }
