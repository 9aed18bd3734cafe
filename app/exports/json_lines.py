"""The JSONL export's lines built by the database: one text column per story holding the
story's fields and its suggestion set as JSON, so that Python only inserts the final codes and
the attributes, joins and encodes. At a million stories the per-story Python work of the
reference builder (`service.nested_records`: a dict per story, its final codes, suggestion set
and attributes, then orjson) is what bounds the export, as `app.exports.lines` found for CSV.

Byte for byte what `formats.jsonl_chunks(service.nested_records(...))` writes (the Python
builder stays the reference, and the test compares both): the keys in the reference's order,
no spaces, text escaped as orjson escapes it (`"` `\\` and the control characters: SQLite's
json_quote and PostgreSQL's to_json escape the same, and neither escapes anything else), the
suggestion items passed through as the JSON text stored (the reference passes the same text
through as an orjson.Fragment, so no float is printed by SQL), one LF after each line.

What SQL does not do is left to Python, per story, in the same order:
- the final codes (a range query per batch, as `service.story_batches` reads them, dumped by
  orjson per story that has some) and the attributes (once per stored attributes document, as
  the view shows them: parsed by orjson, researchers' redacted, dumped by orjson);
- whole lines the database marks NULL and the reference builder makes: the stories with
  codings (who sees which coding, spans mapped to the redacted text, the coders' times as
  orjson writes datetimes) or adjudications, and those of the CSV lines' rules (a story the
  viewer reads redacted with no redacted document yet; a researcher's view of `in_review`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any, NamedTuple, cast

import orjson
from sqlalchemy import literal_column, select
from sqlalchemy.orm import Session

from app.exports.lines import BATCH, _columns, _Dialect
from app.exports.service import (
    _MEMO_DOCUMENTS,
    Batch,
    Context,
    ExportSpec,
    _attribute_document,
    _batch_conditions,
    _has_adjudications,
    coding_records,
    final_code_records,
    final_codes,
    nested_codings,
    nested_records,
)
from app.incidents.schemas import CodeDecisionRead, CodingRead
from app.incidents.service import visible_codings
from app.models import (
    AuditEvent,
    Codebook,
    CodebookVersion,
    Coding,
    CodingCode,
    CodingSpan,
    ImportRun,
    Incident,
    Suggestion,
    User,
)
from app.reviews.service import ADJUDICATE

_NO_CODES = '[],"attributes":'
_NO_CODINGS = ',"codings":[]'
# The story's suggestion row (at most one) and its codebook version, by the names `_tail` uses.
_S = Suggestion.__table__.alias("s")
_V = CodebookVersion.__table__.alias("v")
_K = Codebook.__table__.alias("k")


def _head(d: _Dialect) -> str:
    """The line up to `"final_codes":` from the CTE's columns, NULL when Python builds the
    story's line (the CSV lines' rules)."""
    q = d.quote
    fields = [
        ("id", "CAST(b.id AS TEXT)"),
        ("survey_id", "CAST(b.survey_id AS TEXT)"),
        ("submitted_at", d.json_utc("b.submitted_at")),
        ("source", "'\"' || b.source || '\"'"),  # checked values: nothing to escape
        ("import_file", q("b.import_file")),
        ("consent", "'\"' || b.consent || '\"'"),
        ("language", q("b.language")),
        ("occurred", q("b.occurred")),
        ("occurred_on", q("b.occurred_on")),
        ("circumstances", q("b.circumstances")),
        ("what_happened", q("b.what_happened")),
        ("outcome", q("b.outcome")),
        ("valence", "'\"' || b.valence || '\"'"),
        ("touchpoint", q("b.touchpoint")),
        ("channel", q("b.channel")),
        ("status", "'\"' || b.status || '\"'"),
        ("exclusion_reason", q("b.exclusion_reason")),
        ("finalized_at", d.json_utc("b.finalized_at")),
        ("coders_required", "COALESCE(CAST(b.coders_required AS TEXT), 'null')"),
    ]
    parts = [f"'{',' if i else '{'}\"{name}\":' || {sql}" for i, (name, sql) in enumerate(fields)]
    joined = " || ".join(parts)
    return f"CASE WHEN b.python = 1 THEN NULL ELSE {joined} || ',\"final_codes\":' END"


def _tail(d: _Dialect) -> str:
    """The line after the codings: the suggestion set (its items as stored, as the reference
    passes them through), no adjudications."""
    suggestion = (
        "'{\"codebook\":' || "
        + d.quote("k.key || ' v' || CAST(v.number AS TEXT)")
        + " || ',\"model_id\":' || COALESCE(CAST(s.model_id AS TEXT), 'null')"
        + " || ',\"created_at\":' || "
        + d.json_utc(d.raw_time("s.created_at"))
        + f" || ',\"items\":' || {d.text('s.items')} || '}}'"
    )
    return (
        "',\"suggestions\":' || "
        f"(CASE WHEN s.id IS NULL THEN 'null' ELSE {suggestion} END)"
        " || ',\"adjudications\":[]}'"
    )


def _adjudicated(session: Session, ids: list[int]) -> set[int]:
    """Which of these stories have adjudications (`service.adjudication_batches` reads them)."""
    if not _has_adjudications(session):
        return set()
    return {
        int(entity_id)
        for entity_id in session.scalars(
            select(AuditEvent.entity_id)
            .where(
                AuditEvent.entity_type == "incident",
                AuditEvent.action == ADJUDICATE,
                AuditEvent.entity_id.in_([str(i) for i in ids]),
            )
            .distinct()
        )
    }


def _codings(
    session: Session, spec: ExportSpec, context: Context, first: int, last: int
) -> tuple[dict[int, str], set[int]]:
    """Per story of the id range with codings the viewer sees, its `"codings":[...]` part,
    built by `service.coding_records` from Core rows (`load_codings` builds and validates an
    ORM object and a CodingRead per coding: the reference's largest cost per coded story);
    and the stories whose codings have spans, which the reference builder makes (their
    offsets follow the view's text)."""
    connection = session.connection()
    spanned = set(
        connection.execute(
            select(Coding.incident_id)
            .join(CodingCode, CodingCode.coding_id == Coding.id)
            .join(CodingSpan, CodingSpan.coding_code_id == CodingCode.id)
            .where(Coding.incident_id.between(first, last))
            .distinct()
        ).scalars()
    )
    decisions: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for coding_id, code, decision in connection.execute(
        select(CodingCode.coding_id, CodingCode.code, CodingCode.decision)
        .join(Coding, Coding.id == CodingCode.coding_id)
        .where(Coding.incident_id.between(first, last))
        .order_by(CodingCode.id)
    ):
        decisions[coding_id].append((code, decision))
    found: dict[int, list[CodingRead]] = defaultdict(list)
    required: dict[int, int | None] = {}
    for row in connection.execute(
        select(
            Coding.id,
            Coding.incident_id,
            User.name,
            Coding.codebook_version_id,
            Coding.excluded,
            Coding.exclusion_reason,
            Coding.note,
            Coding.created_at,
            Coding.updated_at,
            Incident.coders_required,
        )
        .join(User, User.id == Coding.coder_id)
        .join(Incident, Incident.id == Coding.incident_id)
        .where(Coding.incident_id.between(first, last))
        .order_by(Coding.id)
    ):
        made = decisions[row.id]
        required[row.incident_id] = row.coders_required
        # As load_codings reads them (no spans: those stories go to the reference builder).
        found[row.incident_id].append(
            CodingRead.model_construct(
                id=row.id,
                incident_id=row.incident_id,
                coder=row.name,
                codebook_version_id=row.codebook_version_id,
                codes=[
                    CodeDecisionRead.model_construct(
                        code=code, origin="suggestion" if decision == "accepted" else "manual"
                    )
                    for code, decision in made
                    if decision != "rejected"
                ],
                rejected_suggestions=[code for code, decision in made if decision == "rejected"],
                excluded=row.excluded,
                exclusion_reason=row.exclusion_reason,
                note=row.note,
                created_at=row.created_at,
                updated_at=row.updated_at,
            )
        )
    parts: dict[int, str] = {}
    for incident_id, codings in found.items():
        story = cast(Incident, _Required(incident_id, required[incident_id]))
        batch = Batch([], {}, {incident_id: visible_codings(story, codings, spec.viewer)}, {})
        records = nested_codings(coding_records(cast(Any, story), batch, spec, context))
        parts[incident_id] = ',"codings":' + orjson.dumps(records).decode()
    return parts, spanned


class _Required(NamedTuple):
    """What `visible_codings` and `coding_records` read of a story without spans."""

    id: int
    coders_required: int | None


def _python_lines(
    session: Session, spec: ExportSpec, context: Context, ids: list[int]
) -> dict[int, str]:
    """The reference builder's lines (no terminator) of these stories."""
    return {
        record["id"]: orjson.dumps(record).decode()
        for record in nested_records(session, spec, context, only=ids)
    }


def story_lines(
    session: Session, spec: ExportSpec, context: Context, *, stats: dict[str, int] | None = None
) -> Iterator[str]:
    """The JSONL lines (LF after each), a batch of stories at a time. `stats` counts the lines
    the database made ("sql") and those the reference builder made."""
    d = _Dialect(session.get_bind().dialect.name == "postgresql")
    conditions = _batch_conditions(session, spec)
    columns = _columns(d, spec)
    head: Any = literal_column(_head(d))
    tail: Any = literal_column(_tail(d))
    segments: dict[Any, str] = {}
    versions = context.versions
    last = 0
    while True:
        batch = (
            select(*columns)
            .select_from(Incident)
            .outerjoin(ImportRun, ImportRun.id == Incident.import_id)
            .where(*conditions, Incident.id > last)
            .order_by(Incident.id)
            .limit(BATCH)
            .cte("b")
            .prefix_with("MATERIALIZED")
        )
        result = session.connection().execute(
            select(literal_column("b.id"), head, literal_column("b.attributes"), tail)
            .select_from(
                batch.outerjoin(_S, _S.c.incident_id == batch.c.id)
                .outerjoin(_V, _V.c.id == _S.c.codebook_version_id)
                .outerjoin(_K, _K.c.id == _V.c.codebook_id)
            )
            .order_by(literal_column("b.id"))
        )
        # The driver's rows as they are (plain text and numbers, nothing to convert).
        rows = result.cursor.fetchall() if result.cursor is not None else []
        result.close()
        if not rows:
            return
        first, last = rows[0][0], rows[-1][0]
        finals = {
            incident_id: orjson.dumps(final_code_records(codes, versions)).decode()
            + ',"attributes":'
            for incident_id, codes in final_codes(session, first, last).items()
        }.get
        get = segments.get
        codings, spanned = _codings(session, spec, context, first, last)
        coded = codings.get
        lines: list[Any] = [
            None
            if text is None
            else text
            + finals(incident_id, _NO_CODES)
            + (get(raw) or _add(segments, raw, spec, context))
            + coded(incident_id, _NO_CODINGS)
            + end
            for incident_id, text, raw, end in rows
        ]
        held = spanned | _adjudicated(session, [r[0] for r in rows])
        if held:
            lines = [None if r[0] in held else text for r, text in zip(rows, lines, strict=True)]
        if None in lines:
            missing = [r[0] for r, text in zip(rows, lines, strict=True) if text is None]
            made = _python_lines(session, spec, context, missing)
            lines = [
                made[r[0]] if text is None else text for r, text in zip(rows, lines, strict=True)
            ]
            made_by_python = len(missing)
        else:
            made_by_python = 0
        if stats is not None:
            stats["sql"] = stats.get("sql", 0) + len(rows) - made_by_python
            stats["python"] = stats.get("python", 0) + made_by_python
        lines.append("")
        yield "\n".join(lines)
        if len(rows) < BATCH:
            return


def _add(segments: dict[Any, str], raw: Any, spec: ExportSpec, context: Context) -> str:
    """A stored attributes document as the view shows it, dumped, remembered for the next
    stories."""
    segment = orjson.dumps(_attribute_document(raw, spec, context)).decode()
    if len(segments) < _MEMO_DOCUMENTS:
        segments[raw] = segment
    return segment
