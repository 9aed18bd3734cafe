"""The stories CSV made by the database (app.exports.lines) is byte for byte the CSV of the
Python row builder (the reference), for hostile values, every view and every role that may
export: the two paths run on the same snapshot and their bytes are compared whole."""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import pytest
from sqlalchemy import select

from app.auth import Principal
from app.exports import lines, service, stream
from app.exports.service import ExportSpec
from app.incidents.service import IncidentFilters
from app.models import (
    Codebook,
    CodebookVersion,
    ImportRun,
    Incident,
    IncidentCode,
    Survey,
    User,
)
from tests.data.conftest import Person, Review

MARKER = "ner:test_pipeline@1.0"
HOSTILE = {
    "occurred": 'He said "no", then left',
    "circumstances": "line one\nline two\r\nline three\ronly a CR",
    "what_happened": "=SUM(A1) +1 -2 @cmd, then a comma at the end,",
    "outcome": '  leading spaces, "quotes" and emoji 😀 ü ß 漢字',
}


@pytest.fixture
def hostile(
    make_survey: Callable[..., Survey],
    codebook_id: int,
    make_story: Callable[..., int],
    review: Review,
    person: Callable[..., Person],
    db: Callable[[], Any],
) -> dict[str, Any]:
    survey = make_survey(codebook_id=codebook_id, double_coding_share=100)
    alice, bob = person(name="alice"), person(name="bob")
    ids = {
        name: make_story(survey, what_happened=f"Story {name}: write to anna.berg@example.com.")
        for name in (
            "hostile",
            "nulls",
            "pre_redaction",
            "marked",
            "partial_redacted",
            "imported",
            "coded",
            "in_review_alice",
            "in_review_bob",
            "plain",
        )
    }
    review.code(alice, ids["coded"], ["extra_mile"], note="a memo")
    review.code(bob, ids["coded"], ["extra_mile"])
    review.code(alice, ids["in_review_alice"], ["complaint"])
    review.code(bob, ids["in_review_bob"], ["complaint"])
    with db() as session:
        # A second codebook whose key sorts before the default's, two versions of it.
        book = Codebook(key='a-book; odd, "key"', name="Another")
        session.add(book)
        session.flush()
        versions = [
            CodebookVersion(codebook_id=book.id, number=n, content={}, created_by="test")
            for n in (1, 2)
        ]
        session.add_all(versions)
        run = ImportRun(
            survey_id=survey.id,
            file_name='survey export, "final"\nv2.csv',
            file_format="csv",
            details={},
            options={},
            imported_by="admin",
            errors=[],
        )
        session.add(run)
        session.flush()
        default_version = session.scalar(
            select(IncidentCode.codebook_version_id).where(IncidentCode.incident_id == ids["coded"])
        )
        story = session.get(Incident, ids["hostile"])
        story.occurred_text = HOSTILE["occurred"]
        story.circumstances = HOSTILE["circumstances"]
        story.what_happened = HOSTILE["what_happened"]
        story.outcome = HOSTILE["outcome"]
        story.touchpoint = 'Gate "B", north'
        story.channel = "In\rperson"  # a lone CR, nothing else to quote for
        story.language = "e,n"
        story.exclusion_reason = 'dup "x",\r\nsee above'
        story.occurred_on = date(2026, 2, 28)
        story.submitted_at = datetime(2026, 3, 1, 12, 30, 5, 123000, tzinfo=UTC)
        story.finalized_at = datetime(2026, 3, 2, 8, 0, 0, tzinfo=UTC)
        story.coders_required = 2
        story.redacted = {f: f"[redacted] {v}" for f, v in HOSTILE.items()}
        story.redacted_with = MARKER
        story.attributes = {
            "segment": 'gold, "best"',
            "nested": {"a": [1, 2, {"b": None}], "ü": "😀"},
            "tags": ["x", "y;z"],
            "flag": True,
            "count": 3,
            "ratio": 1.5,
            "none": None,
            "comment": "mail anna.berg@example.com,\nplease",
            "empty": "",
        }
        for code, version in (
            ("owner_error", versions[1].id),
            ("complaint", default_version),
            ('odd,"code"', versions[0].id),
            ("special_request", versions[1].id),
        ):
            session.add(
                IncidentCode(
                    incident_id=ids["hostile"],
                    code=code,
                    codebook_version_id=version,
                    source="review",
                    confirmed_by="admin",
                )
            )
        nulls = session.get(Incident, ids["nulls"])
        nulls.occurred_text = nulls.circumstances = nulls.outcome = None
        nulls.what_happened = ""
        nulls.touchpoint = nulls.channel = nulls.exclusion_reason = None
        nulls.occurred_on = None
        nulls.submitted_at = datetime(2026, 3, 1, 0, 0, 0, tzinfo=UTC)
        nulls.redacted = {
            "occurred": None,
            "circumstances": None,
            "what_happened": "",
            "outcome": None,
        }
        nulls.attributes = {}
        # Stored before redaction existed: no redacted document, redacted on the fly.
        pre = session.get(Incident, ids["pre_redaction"])
        pre.redacted = {}
        pre.outcome = 'Call me at +49 170 1234567, "soon"'
        pre.attributes = {"segment": "basic"}
        session.get(Incident, ids["marked"]).redacted_with = MARKER
        partial = session.get(Incident, ids["partial_redacted"])
        partial.redacted = {"what_happened": 'only "this", redacted\r\n'}
        partial.redacted_with = "ner:an_older_pipeline@0.9"
        partial.touchpoint = "Gate\nA"  # a lone LF
        partial.attributes = {"segment": 'gold, "best"', "count": 0}
        imported = session.get(Incident, ids["imported"])
        imported.source = "import"
        imported.import_id = run.id
        imported.attributes = {"tags": [], "nested": {}}
        session.get(Incident, ids["coded"]).attributes = {"segment": "basic", "flag": False}
        session.get(Incident, ids["in_review_alice"]).redacted_with = MARKER
        users = {name: uid for uid, name in session.execute(select(User.id, User.name))}
    researchers = {
        name: Principal(id=users[name], name=name, role="researcher") for name in ("alice", "bob")
    }
    return {"survey": survey, "ids": ids, "researchers": researchers}


def _both(factory: Any, spec: ExportSpec, table: str | None = "stories") -> tuple[bytes, bytes]:
    made = b"".join(stream.chunks(factory, spec, "csv", table, sql=True))
    reference = b"".join(stream.chunks(factory, spec, "csv", table, sql=False))
    return made, reference


def _made_by(factory: Any, spec: ExportSpec) -> dict[str, int]:
    """How many lines the database made and how many the reference builder (its fallback)."""
    stats = {"sql": 0, "python": 0}
    with factory() as session:
        context = service.load_context(session, spec)
        for _ in lines.story_lines(session, spec, context, stats=stats):
            pass
    return stats


ADMIN = Principal(id=0, name="the-admin", role="admin")


@pytest.mark.parametrize(
    ("who", "view", "redaction", "python_lines"),
    [
        ("admin", "original", None, 0),
        ("admin", "original", MARKER, 0),
        ("admin", "redacted", None, 1),  # pre_redaction, redacted on the fly
        ("admin", "redacted", MARKER, 0),  # pre_redaction is held back: no text, no Python
        ("alice", "redacted", None, 3),  # and the two stories in review
        ("bob", "redacted", None, 3),
        ("alice", "redacted", MARKER, 2),
    ],
)
def test_the_database_makes_the_reference_bytes(
    app: Any, hostile: dict[str, Any], who: str, view: str, redaction: str | None, python_lines: int
) -> None:
    factory = app.state.sessionmaker
    viewer = ADMIN if who == "admin" else hostile["researchers"][who]
    spec = ExportSpec(
        filters=IncidentFilters(survey_id=hostile["survey"].id),
        view=view,  # type: ignore[arg-type]
        viewer=viewer,
        redaction=redaction,
    )
    made, reference = _both(factory, spec)
    assert made == reference
    rows = list(csv.DictReader(io.StringIO(reference.decode("utf-8-sig"), newline="")))
    assert len(rows) == len(hostile["ids"])
    assert _made_by(factory, spec) == {"sql": len(rows) - python_lines, "python": python_lines}
    by_id = {int(r["id"]): r for r in rows}
    story = by_id[hostile["ids"]["hostile"]]
    # The hostile values went through, as the reference builder writes them.
    if view == "original":
        assert [story[f] for f in ("occurred", "circumstances", "what_happened", "outcome")] == [
            *HOSTILE.values()
        ]
    assert story["final_codes"] == 'owner_error;complaint;odd,"code";special_request'
    assert story["final_codes_codebook"] == (
        'a-book; odd, "key" v1;a-book; odd, "key" v2;cit-service-encounters v1'
    )
    # SQLite keeps six digits of the fraction, PostgreSQL's text drops the trailing zeros.
    assert story["submitted_at"] in (
        "2026-03-01T12:30:05.123000+00:00",
        "2026-03-01T12:30:05.123+00:00",
    )
    assert story["finalized_at"] == "2026-03-02T08:00:00+00:00"
    assert by_id[hostile["ids"]["imported"]]["import_file"] == 'survey export, "final"\nv2.csv'
    assert (story["attribute.comment"] == "mail anna.berg@example.com,\nplease") is (
        view == "original"
    )


def test_filters_and_the_zip_hold_the_same_bytes(app: Any, hostile: dict[str, Any]) -> None:
    factory = app.state.sessionmaker
    survey = hostile["survey"].id
    for viewer, filters in (
        (ADMIN, IncidentFilters(survey_id=survey, status="in_review")),
        (hostile["researchers"]["alice"], IncidentFilters(survey_id=survey, status="in_review")),
        (hostile["researchers"]["bob"], IncidentFilters(survey_id=survey, status="new")),
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
            assert made.count(b"\r\n") >= 2  # a header and at least one story
    # Every table in a zip: its stories.csv is the reference's too.
    spec = ExportSpec(
        filters=IncidentFilters(survey_id=survey), view="redacted", viewer=ADMIN, redaction=MARKER
    )
    made, reference = _both(factory, spec, None)
    members = [zipfile.ZipFile(io.BytesIO(content)) for content in (made, reference)]
    for name in ("stories.csv", "codings.csv", "suggestions.csv", "adjudications.csv"):
        assert members[0].read(name) == members[1].read(name), name


def test_an_empty_export_is_a_header(app: Any, hostile: dict[str, Any]) -> None:
    spec = ExportSpec(filters=IncidentFilters(survey_id=999_999), view="original", viewer=ADMIN)
    made, reference = _both(app.state.sessionmaker, spec)
    assert made == reference and made.startswith("\ufeffid,survey_id,".encode())
