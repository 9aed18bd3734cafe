"""The export's side tables as the zip holds them: the suggestions table's fast line builder
(app.exports.lines.suggestion_lines) writes the bytes of csv.writer over the reference rows,
the codings table read from Core rows (service.coded_stories) holds what the ORM path of the
nested reference (load_codings, the JSONL builder) holds, and the zip, deflated by ISA-L, reads
back with the standard library's zipfile, member for member the tables exported one by one."""

from __future__ import annotations

import csv
import io
import threading
import zipfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from app.exports import formats, lines, service, stream
from app.exports.service import CODING_COLUMNS, ExportSpec
from app.incidents.service import IncidentFilters
from app.models import Codebook, CodebookVersion, Suggestion
from tests.data.test_exports_sql_jsonl import nested  # noqa: F401  (a fixture, by import)
from tests.data.test_exports_sql_lines import (  # noqa: F401  (a fixture, registered by import)
    ADMIN,
    MARKER,
    hostile,
)

# Items as odd as JSON allows: what the line builder writes itself, and what it hands to
# csv.writer (a code or layer that is not text, a score that is not a number, a bool score).
ODD_ITEMS: list[Any] = [
    {"code": "plain", "score": 0.1 + 0.2, "suggested": True, "source": "model", "evidence": []},
    {"code": 'q "x", y\r\nz', "score": 1e-7, "suggested": False, "source": None},
    {"code": "ü 漢字 😀", "score": 1e20, "suggested": None, "source": "a,b", "evidence": None},
    {"code": "ints", "score": 1, "suggested": 1, "source": "rules", "evidence": [1, "a,b"]},
    {"code": "zero", "score": 0, "source": "rules", "evidence": [{"text": 'say "hi"\n'}]},
    {"code": "negative", "score": -0.0, "suggested": "yes", "source": "\ttab"},
    {"code": "none", "score": None, "suggested": False, "source": "rules"},
    {"code": "bool score", "score": True, "suggested": True, "source": "rules"},
    {"code": "text score", "score": "0.5", "suggested": True, "source": "rules"},
    {"code": 7, "score": 0.5, "suggested": True, "source": "rules"},
    {"code": ["a", "b"], "score": 0.5, "suggested": True, "source": {"x": 1}},
    {"score": 2.5e-300, "suggested": True, "source": "rules", "evidence": {"k": "v"}},
    {"code": "", "score": 123456789.123456789, "suggested": False, "source": ""},
]


# Items the line builder writes itself: hostile text, numbers in their shortest notation,
# evidence objects, every falsy evidence.
PLAIN_ITEMS: list[Any] = [
    {
        "code": 'q "x", y\r\nz ü 漢字 😀',
        "score": 0.1 + 0.2,
        "suggested": True,
        "source": "rules",
        "evidence": [
            {"field": "what_happened", "start": 0, "end": 12, "text": 'say "hi",\n\t\x01 ü'},
            {"negative": -3, "flag": False, "none": None, "big": 2**62},
            {},
        ],
    },
    {"code": "half", "score": 0.5, "suggested": False, "source": None, "evidence": []},
    {"code": "one", "score": 1, "suggested": None, "source": "model", "evidence": {}},
    {"code": "one.0", "score": 1.0, "source": "a,b", "evidence": ""},
    {"code": "tiny", "score": 0.0001, "suggested": False, "source": "rules", "evidence": 0},
    {"code": "long", "score": 123456789.12345679, "suggested": True, "evidence": False},
    {"code": None, "score": None, "suggested": False, "source": "rules", "evidence": None},
]


@pytest.fixture
def odd(
    nested: dict[str, Any],  # noqa: F811
    make_story: Callable[..., int],
    db: Callable[[], Any],
) -> dict[str, Any]:
    """The JSONL test's stories, with a story of odd suggestion items, one with an empty set,
    and one suggested without a model or a known codebook version's name."""
    survey = nested["survey"]
    ids = dict(nested["ids"])
    for name in ("odd_items", "empty_items", "plain_items"):
        ids[name] = make_story(survey, what_happened=f"Story {name}.")
    with db() as session:
        version = session.scalar(
            select(CodebookVersion.id)
            .join(Codebook, Codebook.id == CodebookVersion.codebook_id)
            .where(Codebook.key.startswith("a-book"), CodebookVersion.number == 1)
        )
        for name, items in (
            ("odd_items", ODD_ITEMS),
            ("empty_items", []),
            ("plain_items", PLAIN_ITEMS),
        ):
            session.add(
                Suggestion(
                    incident_id=ids[name],
                    items=items,
                    certainty=0.5,
                    codebook_version_id=version,
                    model_id=None,
                    created_at=datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC),
                )
            )
    return {**nested, "ids": ids}


def _specs(odd: dict[str, Any]) -> list[ExportSpec]:
    survey = odd["survey"].id
    alice, bob = odd["researchers"]["alice"], odd["researchers"]["bob"]
    return [
        ExportSpec(filters=IncidentFilters(survey_id=survey), view="original", viewer=ADMIN),
        ExportSpec(filters=IncidentFilters(survey_id=survey), view="redacted", viewer=ADMIN),
        ExportSpec(
            filters=IncidentFilters(survey_id=survey),
            view="redacted",
            viewer=ADMIN,
            redaction=MARKER,
        ),
        ExportSpec(filters=IncidentFilters(survey_id=survey), view="redacted", viewer=alice),
        ExportSpec(filters=IncidentFilters(survey_id=survey), view="redacted", viewer=bob),
        ExportSpec(
            filters=IncidentFilters(survey_id=survey, status="in_review"),
            view="redacted",
            viewer=alice,
        ),
    ]


def _table(factory: Any, spec: ExportSpec, table: str, *, sql: bool = True) -> bytes:
    return b"".join(stream.chunks(factory, spec, "csv", table, sql=sql))


def _rows(content: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(content.decode("utf-8-sig"), newline="")))


def test_suggestion_lines_are_the_reference_bytes(app: Any, odd: dict[str, Any]) -> None:
    factory = app.state.sessionmaker
    for spec in _specs(odd):
        made = _table(factory, spec, "suggestions")
        reference = _table(factory, spec, "suggestions", sql=False)
        assert made == reference, spec.viewer.name
    rows = _rows(_table(factory, _specs(odd)[0], "suggestions"))
    items = [r for r in rows if int(r["incident_id"]) == odd["ids"]["odd_items"]]
    # Every odd item is a line, in the stored order, with the values csv.writer gives them.
    assert len(items) == len(ODD_ITEMS)
    assert [r["code"] for r in items[:3]] == ["plain", 'q "x", y\r\nz', "ü 漢字 😀"]
    scores = [r["score"] for r in items]
    assert scores[:2] == ["0.30000000000000004", "1e-07"] and scores[3:5] == ["1", "0"]
    # PostgreSQL's jsonb keeps numbers as numeric: 1e20 comes back as an integer, -0.0 as 0.0.
    assert scores[2] in ("1e+20", "100000000000000000000") and scores[5] in ("-0.0", "0.0")
    assert scores[6:9] == ["", "true", "0.5"] and scores[12] == "123456789.12345679"
    assert [r["suggested"] for r in items[:6]] == [
        "true",
        "false",
        "false",
        "true",
        "false",
        "true",
    ]
    assert items[4]["evidence"] == '[{"text":"say \\"hi\\"\\n"}]'
    assert items[2]["layer"] == "a,b" and items[1]["layer"] == ""
    assert all(r["model_id"] == "" and r["codebook"] == 'a-book; odd, "key" v1' for r in items)
    assert not [r for r in rows if int(r["incident_id"]) == odd["ids"]["empty_items"]]
    # The stories' suggestion sets, in story order.
    ids = [int(r["incident_id"]) for r in rows]
    assert ids == sorted(ids) and len(set(ids)) >= 8


def test_every_set_is_formatted_once(app: Any, odd: dict[str, Any]) -> None:
    """Every suggestion set of the export goes through the line builder once, the plain ones
    and the odd ones (which it hands to csv.writer item by item): its lines are the
    reference's (without its header), one per item of every set."""
    factory = app.state.sessionmaker
    spec = _specs(odd)[0]
    with factory() as session:
        context = service.load_context(session, spec, with_attributes=False)
        made = b"".join(lines.suggestion_lines(session, spec, context))
        sets = session.scalars(select(Suggestion.items)).all()
    assert made == _table(factory, spec, "suggestions", sql=False).split(b"\r\n", 1)[1]
    assert len(sets) >= 10
    assert made.count(b"\r\n") >= sum(len(items) for items in sets)


def test_the_codings_table_holds_the_nested_references_codings(
    app: Any, odd: dict[str, Any]
) -> None:
    """The codings table (Core rows) against the codings of the nested reference, which reads
    them through load_codings (ORM objects and validated CodingReads), for every viewer."""
    factory = app.state.sessionmaker
    for spec in _specs(odd):
        with factory() as session:
            context = service.load_context(session, spec, with_attributes=False)
            expected = [
                [record["id"], *(coding[c] for c in CODING_COLUMNS[1:])]
                for record in service.nested_records(session, spec, context)
                for coding in record["codings"]
            ]
        reference = b"".join(formats.csv_chunks(list(CODING_COLUMNS), expected))
        made = _table(factory, spec, "codings")
        assert made == reference, spec.viewer.name
        rows = _rows(made)
        if spec.viewer.role == "admin" and spec.filters.status is None:
            assert len(rows) == 9  # every coder's coding of the 7 coded stories
            spanned = [r for r in rows if int(r["incident_id"]) == odd["ids"]["spanned"]]
            assert spanned and spanned[0]["spans"].startswith('{"extra_mile":[{"field"')
        else:  # blind coding: no other coder's coding of a story still in review
            name = spec.viewer.name
            for row in rows:
                if int(row["incident_id"]) in (
                    odd["ids"]["in_review_alice"],
                    odd["ids"]["in_review_bob"],
                ):
                    assert row["coder"] == name


def test_the_zip_reads_back_table_for_table(app: Any, odd: dict[str, Any]) -> None:
    factory = app.state.sessionmaker
    for spec in _specs(odd)[:4]:
        content = b"".join(stream.chunks(factory, spec, "csv"))
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            assert archive.testzip() is None  # every member's CRC checks
            assert [i.compress_type for i in archive.infolist()] == [zipfile.ZIP_DEFLATED] * 4
            for name in service.TABLES:
                assert archive.read(f"{name}.csv") == _table(factory, spec, name), name
                reference = _table(factory, spec, name, sql=False)
                if name != "codings":  # its reference is the nested builder's (above)
                    assert archive.read(f"{name}.csv") == reference, name


def test_a_study_without_adjudications_reads_no_story_for_them(
    app: Any,
    hostile: dict[str, Any],  # noqa: F811
) -> None:
    spec = ExportSpec(
        filters=IncidentFilters(survey_id=hostile["survey"].id), view="original", viewer=ADMIN
    )
    with app.state.sessionmaker() as session:
        context = service.load_context(session, spec)
        assert list(service.table_rows(session, spec, context, "adjudications")) == []
        # The codings table reads only the stories that have codings.
        coded = [i for ids in service.coded_batches(session, spec) for i in ids]
    assert coded == sorted(hostile["ids"][n] for n in ("coded", "in_review_alice", "in_review_bob"))
    assert _table(app.state.sessionmaker, spec, "adjudications") == (
        "\ufeffincident_id,adjudicated_by,at,final_codes,excluded,exclusion_reason,note\r\n".encode()
    )


def test_the_deflating_thread_ends_with_the_export() -> None:
    """An error while a member's lines are made reaches the export's caller; an export stopped
    after its first chunk (a client gone) stops the deflating thread."""

    def deflating() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "cit-export-deflate"]

    def broken() -> Iterator[bytes]:
        yield b"id\r\n" * 200_000
        raise RuntimeError("the database went away")

    with pytest.raises(RuntimeError, match="went away"):
        b"".join(formats.zip_chunks([("a.csv", broken)]))
    assert not deflating()

    def endless() -> Iterator[bytes]:
        while True:
            yield b"1,2,3\r\n" * 100_000

    chunks = formats.zip_chunks([("b.csv", endless)])
    assert next(chunks).startswith(b"PK")
    assert deflating()
    chunks.close()
    assert not deflating()
    # A whole zip: its member reads back.
    content = b"".join(formats.zip_chunks([("c.csv", lambda: iter([b"x,y\r\n"] * 1000))]))
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        assert archive.read("c.csv") == b"x,y\r\n" * 1000
