"""The JSONL export made by the database (app.exports.json_lines) is byte for byte the JSONL of
the Python builder (the reference), for hostile values, every view and every role that may
export: the two paths run on the same snapshot and their bytes are compared whole."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from app.exports import json_lines, lines, service, stream
from app.exports.service import ExportSpec
from app.incidents.service import IncidentFilters
from app.models import (
    Codebook,
    CodebookVersion,
    Coding,
    CodingCode,
    CodingSpan,
    Incident,
    Suggestion,
)
from tests.data.conftest import Person, Review
from tests.data.test_exports_sql_lines import (  # noqa: F401  (a fixture, registered by import)
    ADMIN,
    MARKER,
    hostile,
)

CONTROL = "tab\there, bell\x07, unit\x1f, del\x7f, \\backslash\\, /slash/, \u2028\u2029 end"
# Scores as a model may store them: orjson and the databases print some of these differently,
# which is why the items are passed through as stored by both builders.
SCORES = (0.1 + 0.2, 1e-7, 1e20, -0.0, 0.5, 1 / 3, 2.5e-300, 123456789.123456789)


@pytest.fixture
def nested(
    hostile: dict[str, Any],  # noqa: F811
    make_story: Callable[..., int],
    review: Review,
    person: Callable[..., Person],
    admin_person: Person,
    db: Callable[[], Any],
) -> dict[str, Any]:
    """The CSV test's stories, with suggestion sets (odd scores, an odd codebook key), a
    story with control characters, and an adjudicated story on top."""
    survey = hostile["survey"]
    ids = dict(hostile["ids"])
    ids["control"] = make_story(survey, what_happened=CONTROL, circumstances=CONTROL)
    ids["disputed"] = make_story(survey, what_happened="They disagreed on this one.")
    ids["scored"] = make_story(survey, what_happened="Scored, nothing else.", suggested=("x",))
    ids["excluded"] = make_story(survey, what_happened="One coder left this one out.")
    ids["spanned"] = make_story(survey, what_happened="A coder marked a passage here.")
    carol, dave = person(name="carol"), person(name="dave")
    review.code(carol, ids["disputed"], ["complaint"])
    review.code(dave, ids["disputed"], ["extra_mile"])
    review.exclude(carol, ids["excluded"], 'a duplicate, "see" #3\n')
    review.code(dave, ids["excluded"], ["complaint", "owner_error"], note="\u2028 \x01")
    spanned = review.code(carol, ids["spanned"], ["extra_mile"])
    adjudicated = review.adjudicate(
        admin_person, ids["disputed"], {"codes": ["complaint"], "note": 'a "ruling"\n'}
    )
    assert adjudicated.status_code == 200, adjudicated.text
    with db() as session:
        # An accepted suggestion and a rejected one beside the manual codes, and a span.
        coded = session.scalars(
            select(CodingCode).join(Coding).where(Coding.incident_id == ids["coded"])
        ).first()
        assert coded is not None
        coded.decision = "accepted"
        session.add(CodingCode(coding_id=coded.coding_id, code="owner_error", decision="rejected"))
        marked = session.scalars(
            select(CodingCode).where(CodingCode.coding_id == spanned["id"])
        ).one()
        session.add(CodingSpan(coding_code_id=marked.id, field="what_happened", start=2, end=7))
        odd_version = session.scalar(
            select(CodebookVersion.id)
            .join(Codebook, Codebook.id == CodebookVersion.codebook_id)
            .where(Codebook.key.startswith("a-book"), CodebookVersion.number == 2)
        )
        for n, name in enumerate(("hostile", "nulls", "control", "marked", "imported", "plain")):
            session.add(
                Suggestion(
                    incident_id=ids[name],
                    items=[
                        {
                            "code": f'c{i} "q"\n',
                            "score": score,
                            "suggested": i % 2 == 0,
                            "source": "rules",
                            "evidence": [{"field": "what_happened", "start": 0, "end": 3}],
                        }
                        for i, score in enumerate(SCORES[n:])
                    ],
                    certainty=0.25,
                    codebook_version_id=odd_version,
                    created_at=datetime(2026, 3, 4, 5, 6, 7, 890000, tzinfo=UTC),
                )
            )
        session.get(Incident, ids["control"]).attributes = {
            "ratio": 0.1 + 0.2,
            "big": 1e20,
            "note": CONTROL,
        }
    return {**hostile, "ids": ids}


def _both(factory: Any, spec: ExportSpec) -> tuple[bytes, bytes]:
    made = b"".join(stream.chunks(factory, spec, "jsonl", sql=True))
    reference = b"".join(stream.chunks(factory, spec, "jsonl", sql=False))
    return made, reference


def _made_by(factory: Any, spec: ExportSpec) -> dict[str, int]:
    """How many lines the database made and how many the reference builder (its fallback)."""
    stats = {"sql": 0, "python": 0}
    with factory() as session:
        context = service.load_context(session, spec, with_attributes=False)
        for _ in json_lines.story_lines(session, spec, context, stats=stats):
            pass
    return stats


# The reference builder makes the lines of the adjudicated story and of the story whose coding
# has a span (admins), plus the stories in review (researchers: blind coding) and the story
# without a redacted document (the redacted view without a required marker).
ADMIN_PYTHON = 2
IN_REVIEW = 2  # in_review_alice, in_review_bob; the spanned story is in review too


@pytest.mark.parametrize(
    ("who", "view", "redaction", "python_lines"),
    [
        ("admin", "original", None, ADMIN_PYTHON),
        ("admin", "original", MARKER, ADMIN_PYTHON),
        ("admin", "redacted", None, ADMIN_PYTHON + 1),  # pre_redaction, redacted on the fly
        ("admin", "redacted", MARKER, ADMIN_PYTHON),  # pre_redaction is held back: no text
        ("alice", "redacted", None, ADMIN_PYTHON + IN_REVIEW + 1),
        ("bob", "redacted", None, ADMIN_PYTHON + IN_REVIEW + 1),
        ("alice", "redacted", MARKER, ADMIN_PYTHON + IN_REVIEW),
    ],
)
def test_the_database_makes_the_reference_bytes(
    app: Any, nested: dict[str, Any], who: str, view: str, redaction: str | None, python_lines: int
) -> None:
    factory = app.state.sessionmaker
    viewer = ADMIN if who == "admin" else nested["researchers"][who]
    spec = ExportSpec(
        filters=IncidentFilters(survey_id=nested["survey"].id),
        view=view,  # type: ignore[arg-type]
        viewer=viewer,
        redaction=redaction,
    )
    made, reference = _both(factory, spec)
    assert made == reference
    records = [orjson.loads(line) for line in reference.splitlines()]
    assert len(records) == len(nested["ids"]) and reference.endswith(b"}\n")
    total = len(records)
    assert _made_by(factory, spec) == {"sql": total - python_lines, "python": python_lines}
    by_id = {r["id"]: r for r in records}
    story = by_id[nested["ids"]["hostile"]]
    # The hostile values went through, as the reference builder writes them.
    assert [c["code"] for c in story["final_codes"]] == [
        "owner_error",
        "complaint",
        'odd,"code"',
        "special_request",
    ]
    assert story["suggestions"]["codebook"] == 'a-book; odd, "key" v2'
    assert [i["score"] for i in story["suggestions"]["items"]] == list(SCORES)
    assert story["attributes"]["ratio"] == 1.5
    control = by_id[nested["ids"]["control"]]
    assert control["attributes"]["note"] == CONTROL
    if view == "original":
        assert control["what_happened"] == CONTROL
    assert by_id[nested["ids"]["disputed"]]["adjudications"][0]["note"] == 'a "ruling"\n'
    # SQLite keeps six digits of the fraction, PostgreSQL's text drops the trailing zeros.
    assert by_id[nested["ids"]["plain"]]["suggestions"]["created_at"] in (
        "2026-03-04T05:06:07.890000+00:00",
        "2026-03-04T05:06:07.89+00:00",
    )
    assert by_id[nested["ids"]["scored"]]["suggestions"]["codebook"] == "cit-service-encounters v1"
    assert by_id[nested["ids"]["nulls"]]["occurred_on"] is None
    coded = by_id[nested["ids"]["coded"]]["codings"]
    if who == "admin":  # the researchers' view of a finished double coding shows both too
        assert [c["coder"] for c in coded] == ["alice", "bob"]
        assert coded[0]["accepted_suggestions"] == ["extra_mile"]
        assert coded[0]["rejected_suggestions"] == ["owner_error"]
        assert by_id[nested["ids"]["spanned"]]["codings"][0]["spans"] is not None
    excluded = by_id[nested["ids"]["excluded"]]["codings"]
    assert [c["excluded"] for c in excluded] == [True, False]


def test_filters_and_an_erased_story(app: Any, nested: dict[str, Any]) -> None:
    factory = app.state.sessionmaker
    survey = nested["survey"].id
    for viewer, filters in (
        (ADMIN, IncidentFilters(survey_id=survey, status="in_review")),
        (nested["researchers"]["alice"], IncidentFilters(survey_id=survey, status="in_review")),
        (nested["researchers"]["bob"], IncidentFilters(survey_id=survey, status="new")),
        (
            ADMIN,
            IncidentFilters(
                survey_id=survey, submitted_from=datetime(2026, 3, 1, 0, 0, 1, tzinfo=UTC)
            ),
        ),
    ):
        for view in ("original", "redacted") if viewer.role == "admin" else ("redacted",):
            spec = ExportSpec(filters=filters, view=view, viewer=viewer)  # type: ignore[arg-type]
            made, reference = _both(factory, spec)
            assert made == reference, (viewer.name, filters, view)
            assert made.count(b"\n") >= 1
    spec = ExportSpec(filters=IncidentFilters(survey_id=survey), view="original", viewer=ADMIN)
    before = _both(factory, spec)[0]
    with factory() as session, session.begin():
        from app.erasure.service import erase_incident

        erase_incident(session, nested["ids"]["hostile"], reason="test", actor=None)
    made, reference = _both(factory, spec)
    assert made == reference and made.count(b"\n") == before.count(b"\n") - 1


def test_an_empty_export_is_empty(app: Any, nested: dict[str, Any]) -> None:
    spec = ExportSpec(filters=IncidentFilters(survey_id=999_999), view="original", viewer=ADMIN)
    assert _both(app.state.sessionmaker, spec) == (b"", b"")


@pytest.mark.parametrize("batch", [2, 3, 100])
def test_batches_read_at_once_give_the_same_bytes_in_order(
    app: Any, nested: dict[str, Any], monkeypatch: pytest.MonkeyPatch, batch: int
) -> None:
    """PostgreSQL reads several batches at once (`json_lines._ahead`, on connections of their
    own that import the export's snapshot); the lines come back in id order, the same bytes as
    one batch after the other on the session's connection, whatever the batch size (a last
    batch that is full, one that is short, a single batch). SQLite reads one batch after the
    other whatever `readers` says: the same bytes too."""
    monkeypatch.setattr(lines, "BATCH", batch)
    monkeypatch.setattr(json_lines, "BATCH", batch)
    factory = app.state.sessionmaker
    survey = nested["survey"].id
    for viewer, view in ((ADMIN, "original"), (nested["researchers"]["alice"], "redacted")):
        spec = ExportSpec(filters=IncidentFilters(survey_id=survey), view=view, viewer=viewer)  # type: ignore[arg-type]
        made = {}
        for readers in (0, 1, 2, 3):
            with factory() as session:
                stream._snapshot(session)
                context = service.load_context(session, spec, with_attributes=False)
                made[readers] = b"".join(
                    json_lines.story_lines(session, spec, context, readers=readers)
                )
        assert made[1] == made[0] and made[2] == made[0] and made[3] == made[0]
        assert made[0] == b"".join(stream.chunks(factory, spec, "jsonl", sql=False))
        ids = [orjson.loads(line)["id"] for line in made[0].splitlines()]
        assert ids == sorted(ids) and len(ids) == len(nested["ids"])
