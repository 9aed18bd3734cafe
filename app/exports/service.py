"""What an export holds: stories with their answers and final codes, every coder's coding, the
suggestions and the adjudications, read in keyset-paged batches (constant memory).

The same rules as the API: researchers read the redacted text (`redacted_answers`, the
attributes through `redacted_attributes`), blind double coding hides other coders' codings
(`visible_codings`, `visible_status`), admins read the original unless they ask otherwise."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from operator import itemgetter
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import orjson
from sqlalchemy import String, Text, exists, func, select, true
from sqlalchemy import cast as sql_cast
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.functions import FunctionElement

from app.auth import Principal
from app.exports.formats import cell
from app.incidents.redaction import (
    REDACTED_FIELDS,
    gated_answers,
    original_answers,
    redacted_answers,
    replacements_of,
)
from app.incidents.schemas import CodingRead
from app.incidents.service import (
    IncidentFilters,
    View,
    filter_conditions,
    load_codings,
    redacted_attributes,
    visible_codings,
    visible_status,
)
from app.models import (
    AuditEvent,
    Codebook,
    CodebookVersion,
    Coding,
    CodingCode,
    CodingSpan,
    ImportRun,
    Incident,
    IncidentCode,
    Suggestion,
    User,
)
from app.models.base import UTCDateTime
from app.reviews.service import ADJUDICATE

if TYPE_CHECKING:
    from sqlalchemy.engine import Row

BATCH = 2000
# Who reads an export made with the command line: the operator, with an admin's view.
CLI_VIEWER = Principal(id=0, name="cli", role="admin")
TABLES = ("stories", "codings", "suggestions", "adjudications")
MAX_ATTRIBUTE_COLUMNS = 200

STORY_COLUMNS = (
    "id",
    "survey_id",
    "submitted_at",
    "source",
    "import_file",
    "consent",
    "language",
    "occurred",
    "occurred_on",
    "circumstances",
    "what_happened",
    "outcome",
    "valence",
    "touchpoint",
    "channel",
    "status",
    "exclusion_reason",
    "finalized_at",
    "coders_required",
    "final_codes",
    "final_codes_codebook",
)
CODING_COLUMNS = (
    "incident_id",
    "coding_id",
    "coder",
    "codebook",
    "codes",
    "accepted_suggestions",
    "manual_codes",
    "rejected_suggestions",
    "excluded",
    "exclusion_reason",
    "note",
    "spans",
    "created_at",
    "updated_at",
)
SUGGESTION_COLUMNS = (
    "incident_id",
    "code",
    "score",
    "suggested",
    "layer",
    "model_id",
    "codebook",
    "created_at",
    "evidence",
)
ADJUDICATION_COLUMNS = (
    "incident_id",
    "adjudicated_by",
    "at",
    "final_codes",
    "excluded",
    "exclusion_reason",
    "note",
)


class _RawText(FunctionElement[str]):
    """A column read as the database's text, without per-row conversion by SQLAlchemy or the
    driver: SQLite hands back what it stores; PostgreSQL casts (timestamps in UTC). Dates and
    JSON then cost a string slice or one orjson.loads instead of object construction."""

    type = String()
    inherit_cache = True
    name = "cit_raw_text"


@compiles(_RawText)
def _raw_default(element: _RawText, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.clauses, **kw))


@compiles(_RawText, "postgresql")
def _raw_postgresql(element: _RawText, compiler: Any, **kw: Any) -> str:
    inner = compiler.process(element.clauses, **kw)
    (column,) = element.clauses
    if isinstance(column.type, UTCDateTime):
        return f"CAST(({inner}) AT TIME ZONE 'UTC' AS TEXT)"
    return f"CAST({inner} AS TEXT)"


def _raw(column: Any) -> Any:
    return _RawText(column).label(column.key)


_COMMON = (
    Incident.id,
    Incident.submission_key,
    Incident.survey_id,
    _raw(Incident.submitted_at),
    Incident.source,
    Incident.import_id,
    Incident.consent,
    Incident.language,
    Incident.occurred_text,
    _raw(Incident.occurred_on),
    Incident.circumstances,
    Incident.what_happened,
    Incident.outcome,
    Incident.valence,
    Incident.touchpoint,
    Incident.channel,
    Incident.status,
    Incident.exclusion_reason,
    _raw(Incident.finalized_at),
    Incident.coders_required,
    _raw(Incident.attributes),
)
# Researchers' exports also read the redacted answers and where the redactions are.
_REDACTED = (_raw(Incident.redacted), _raw(Incident.redaction_spans), Incident.redacted_with)


def _json(value: Any) -> Any:
    """A JSON column read raw: text on SQLite (parsed here, by orjson), already parsed by
    PostgreSQL's driver."""
    return orjson.loads(value) if isinstance(value, str | bytes) else value


class _Story:
    """A story row with its JSON columns parsed: what the redaction and visibility helpers
    read (`redacted`, `attributes`, `status`, ...), without an ORM object per row."""

    __slots__ = (
        "attributes",
        "channel",
        "circumstances",
        "coders_required",
        "consent",
        "exclusion_reason",
        "finalized_at",
        "id",
        "import_id",
        "language",
        "occurred_on",
        "occurred_text",
        "outcome",
        "redacted",
        "redacted_with",
        "redaction_spans",
        "source",
        "status",
        "submission_key",
        "submitted_at",
        "survey_id",
        "touchpoint",
        "valence",
        "what_happened",
    )  # fmt: skip
    id: int
    submission_key: str
    survey_id: int
    submitted_at: Any
    source: str
    import_id: int | None
    consent: str
    language: str
    occurred_text: str | None
    occurred_on: Any
    circumstances: str | None
    what_happened: str
    outcome: str | None
    valence: str
    touchpoint: str | None
    channel: str | None
    status: str
    exclusion_reason: str | None
    finalized_at: Any
    coders_required: int | None
    attributes: dict[str, Any]
    redacted: dict[str, Any] | None
    redaction_spans: dict[str, Any] | None
    redacted_with: str | None

    def __init__(self, row: Any) -> None:
        values = tuple(row)
        (
            self.id, self.submission_key, self.survey_id, self.submitted_at, self.source,
            self.import_id, self.consent, self.language, self.occurred_text, self.occurred_on,
            self.circumstances, self.what_happened, self.outcome, self.valence, self.touchpoint,
            self.channel, self.status, self.exclusion_reason, self.finalized_at,
            self.coders_required,
        ) = values[:20]  # fmt: skip
        self.attributes = _json(values[20]) or {}
        if len(values) > 21:
            self.redacted = _json(values[21]) or {}
            self.redaction_spans = _json(values[22]) or {}
            self.redacted_with = values[23]
        else:
            self.redacted = self.redaction_spans = self.redacted_with = None


def selected(view: View) -> tuple[Any, ...]:
    return _COMMON if view == "original" else (*_COMMON, *_REDACTED)


def utc_text(value: Any) -> Any:
    """A stored UTC time as ISO 8601 with its zone, whichever database it came from."""
    if value is None or isinstance(value, datetime):
        return value.astimezone(UTC).isoformat() if value is not None else None
    text = str(value)
    if "T" in text:  # converted already
        return text
    fraction = text[19:]
    return text[:10] + "T" + text[11:19] + (fraction if fraction.strip(".0") else "") + "+00:00"


def day_text(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else value


@dataclass(frozen=True)
class ExportSpec:
    """Which stories (the incident list's filters) and as whom."""

    filters: IncidentFilters
    view: View
    viewer: Principal
    # The redaction marker the redacted view requires (`required_redaction` of the configured
    # NER pipeline): a story not yet redacted with it is exported without its text, as the API
    # serves it (`redaction_pending`). None: the pattern redaction done at submission suffices.
    redaction: str | None = None


@dataclass
class Context:
    """What every batch needs, loaded once: codebook version names, import file names."""

    versions: dict[int, str]
    imports: dict[int, str]
    attribute_keys: list[str]
    memo: dict[str, str] = field(default_factory=dict)
    # Per stored attributes document (its text), what a story row or record holds of it: a
    # million stories share a few dozen documents, so each is parsed (and redacted) once.
    attribute_cells: dict[Any, list[Any]] = field(default_factory=dict)
    attribute_docs: dict[Any, Any] = field(default_factory=dict)


@dataclass
class Batch:
    rows: Sequence[Any]
    final_codes: dict[int, list[dict[str, Any]]]
    codings: dict[int, list[CodingRead]]
    spans: dict[tuple[int, str], Any]


def count_stories(session: Session, spec: ExportSpec) -> int:
    conditions = filter_conditions(spec.filters, spec.view, spec.viewer)
    return int(session.scalar(select(func.count(Incident.id)).where(*conditions)) or 0)


def attribute_keys(session: Session, spec: ExportSpec) -> list[str]:
    """Every attribute name of the exported stories (one column each), in one query."""
    conditions = filter_conditions(spec.filters, spec.view, spec.viewer)
    # Over the distinct attribute documents first: a million stories share a few dozen.
    documents = select(Incident.attributes.label("doc")).where(*conditions).distinct().subquery()
    if session.get_bind().dialect.name == "postgresql":
        key = func.jsonb_object_keys(documents.c.doc).label("key")
        query: Any = select(key).distinct()
    else:
        each = func.json_each(documents.c.doc).table_valued("key")
        query = select(each.c.key).select_from(documents).join(each, true()).distinct()
    return sorted(str(k) for k in session.scalars(query))[:MAX_ATTRIBUTE_COLUMNS]


def _batch_conditions(session: Session, spec: ExportSpec) -> list[Any]:
    """The export's filters, bounded by the last matching id when they narrow more than the
    survey (looked up once per export and session): a keyset loop over a date range or a status
    then stops at that id instead of scanning every later story to find that nothing more
    matches. `max(id + 0)`, so that the planner picks an index by the filters (the date index)
    rather than walking the survey's ids backwards to the first story that matches them."""
    conditions = list(filter_conditions(spec.filters, spec.view, spec.viewer))
    narrowed = any(v is not None for k, v in vars(spec.filters).items() if k != "survey_id")
    if not narrowed:
        return conditions  # the survey's index ends the loop by itself
    bounds = session.info.setdefault("cit_export_bounds", {})
    key = id(spec)
    if key not in bounds:
        bounds[key] = (spec, session.scalar(select(func.max(Incident.id + 0)).where(*conditions)))
    bound = bounds[key][1]
    if bound is not None:
        conditions.append(Incident.id <= bound)
    return conditions


def load_context(session: Session, spec: ExportSpec, *, with_attributes: bool = True) -> Context:
    versions = {
        vid: f"{key} v{number}"
        for vid, key, number in session.execute(
            select(CodebookVersion.id, Codebook.key, CodebookVersion.number).join(
                Codebook, Codebook.id == CodebookVersion.codebook_id
            )
        )
    }
    imports = {i: name for i, name in session.execute(select(ImportRun.id, ImportRun.file_name))}
    keys = attribute_keys(session, spec) if with_attributes else []
    return Context(versions, imports, keys)


def final_codes(session: Session, first: int, last: int) -> dict[int, list[dict[str, Any]]]:
    """The final codes of the stories in an id range (cheaper than IN with thousands of ids;
    the caller skips the range's stories it does not export), per story in id order."""
    result = session.connection().execute(
        select(
            IncidentCode.incident_id,
            IncidentCode.code,
            IncidentCode.codebook_version_id,
            IncidentCode.source,
            IncidentCode.confirmed_by,
            _raw(IncidentCode.confirmed_at),
        )
        .where(IncidentCode.incident_id.between(first, last))
        .order_by(IncidentCode.incident_id, IncidentCode.id)
    )
    # The driver's rows as they are (text and numbers): a Row object per code cost more.
    rows = result.cursor.fetchall() if result.cursor is not None else []
    result.close()
    found: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for incident_id, code, version_id, source, confirmed_by, confirmed_at in rows:
        found[incident_id].append(
            {
                "incident_id": incident_id,
                "code": code,
                "codebook_version_id": version_id,
                "source": source,
                "confirmed_by": confirmed_by,
                "confirmed_at": utc_text(confirmed_at),
            }
        )
    return found


def final_code_records(
    codes: Iterable[dict[str, Any]], versions: dict[int, str]
) -> list[dict[str, Any]]:
    """A story's final codes as the nested export (JSONL) holds them."""
    return [
        {
            "code": c["code"],
            "codebook": versions.get(c["codebook_version_id"]),
            "codebook_version_id": c["codebook_version_id"],
            "source": c["source"],
            "confirmed_by": c["confirmed_by"],
            "confirmed_at": c["confirmed_at"],
        }
        for c in codes
    ]


def story_batches(
    session: Session,
    spec: ExportSpec,
    *,
    codings: bool,
    batch_size: int = BATCH,
    plain: bool = False,
    only: Sequence[int] | None = None,
) -> Iterator[Batch]:
    """The stories in id order, a batch at a time, with their final codes and (when asked, or
    when the caller's view of the status depends on them) the codings the viewer may see.

    `plain`: the rows are the database rows as selected (`selected(view)` order), not parsed
    into `_Story` objects (the stories table and the JSONL export read them by position).
    `only`: just these stories (of those the export holds)."""
    conditions = _batch_conditions(session, spec)
    if only is not None:
        conditions = [*conditions, Incident.id.in_(list(only))]
    last = 0
    blind = spec.viewer.role != "admin"
    while True:
        # Core execution on the session's connection: no ORM loading step per row.
        found = (
            session.connection()
            .execute(
                select(*selected(spec.view))
                .where(*conditions, Incident.id > last)
                .order_by(Incident.id)
                .limit(batch_size)
            )
            .all()
        )
        if not found:
            return
        rows: Sequence[Any] = found if plain else [_Story(r) for r in found]
        ids = [r[0] for r in found]
        first, last = ids[0], ids[-1]
        members = set(ids)
        finals = {
            incident_id: codes
            for incident_id, codes in final_codes(session, first, last).items()
            if incident_id in members  # other surveys' or filtered-out stories in the range
        }
        if codings:
            coded = session.connection().execute(
                select(Coding.incident_id).where(Coding.incident_id.between(first, last)).distinct()
            )
            need = sorted(members.intersection(coded.scalars()))
        else:
            need = [r[0] for r in found if r[16] == "in_review"] if blind else []
        loaded = load_codings(session, need) if need else {}
        visible: dict[int, list[CodingRead]] = {}
        by_id = {r[0]: r for r in found}
        for incident_id, found_codings in loaded.items():
            visible[incident_id] = visible_codings(
                cast(Incident, _Story(by_id[incident_id])), found_codings, spec.viewer
            )
        spans: dict[tuple[int, str], Any] = {}
        coding_ids = (
            [c.id for found_codings in visible.values() for c in found_codings] if codings else []
        )
        if coding_ids:
            for coding_id, span_code, span_field, start, end in session.execute(
                select(
                    CodingCode.coding_id,
                    CodingCode.code,
                    CodingSpan.field,
                    CodingSpan.start,
                    CodingSpan.end,
                )
                .join(CodingSpan, CodingSpan.coding_code_id == CodingCode.id)
                .where(CodingCode.coding_id.in_(coding_ids))
                .order_by(CodingSpan.id)
            ):
                spans.setdefault((coding_id, span_code), []).append(
                    {"field": span_field, "start": start, "end": end}
                )
        yield Batch(rows, finals, visible, spans)
        if len(found) < batch_size:
            return  # the last batch: no need to ask for the empty one after it


def _answers(row: Any, view: View, redaction: str | None = None) -> dict[str, str | None]:
    incident = cast(Incident, row)
    if view == "original":
        return original_answers(incident)
    return gated_answers(incident, redaction)[0]  # no text at all until redacted as required


def _attributes(row: Row[Any], spec: ExportSpec, context: Context) -> dict[str, Any]:
    attributes = row.attributes
    if spec.view == "original":
        return attributes  # parsed for this row alone: nothing else holds it
    return redacted_attributes(attributes, context.memo)


def _status(row: Row[Any], batch: Batch, viewer: Principal) -> str:
    return visible_status(cast(Incident, row), batch.codings.get(row.id, []), viewer)


# Positions in a plain row (`selected(view)` order).
_ID, _SUBMITTED, _IMPORT, _OCCURRED_ON, _STATUS, _FINALIZED, _ATTRIBUTES = 0, 3, 5, 9, 16, 18, 20
_ORIGINAL = (8, 10, 11, 12)  # occurred_text, circumstances, what_happened, outcome
_REDACTED_DOC, _REDACTED_WITH = 21, 23
_MEMO_DOCUMENTS = 10_000


def _plain_answers(row: Any, spec: ExportSpec) -> tuple[Any, Any, Any, Any]:
    """The four answers of a plain row in the export's view (as `_answers` gives them)."""
    if spec.view == "original":
        occurred, circumstances, what_happened, outcome = _ORIGINAL
        return row[occurred], row[circumstances], row[what_happened], row[outcome]
    if spec.redaction is not None and row[_REDACTED_WITH] != spec.redaction:
        return None, None, None, None  # not yet redacted as required: no text at all
    redacted = _json(row[_REDACTED_DOC])
    if not redacted:  # a story from before redaction existed: redacted on the fly
        answers = redacted_answers(cast(Incident, _Story(row)))
        return tuple(answers[f] for f in REDACTED_FIELDS)  # type: ignore[return-value]
    return tuple(redacted.get(f) for f in REDACTED_FIELDS)  # type: ignore[return-value]


def _attribute_document(raw: Any, spec: ExportSpec, context: Context) -> dict[str, Any]:
    """A story's attributes as the view shows them, parsed (and redacted) once per stored
    document. The dict is shared between stories: read it, never change it."""
    doc = context.attribute_docs.get(raw) if isinstance(raw, str) else None
    if doc is None:
        doc = _json(raw) or {}
        if spec.view != "original":
            doc = redacted_attributes(doc, context.memo)
        if isinstance(raw, str) and len(context.attribute_docs) < _MEMO_DOCUMENTS:
            context.attribute_docs[raw] = doc
    return doc


def _attribute_cells(raw: Any, spec: ExportSpec, context: Context) -> list[Any]:
    """The attribute columns of a story row, as CSV/xlsx cells, once per stored document."""
    cells = context.attribute_cells.get(raw) if isinstance(raw, str) else None
    if cells is None:
        doc = _attribute_document(raw, spec, context)
        cells = [cell(doc.get(k)) for k in context.attribute_keys]
        if isinstance(raw, str) and len(context.attribute_cells) < _MEMO_DOCUMENTS:
            context.attribute_cells[raw] = cells
    return cells


def story_row(row: Any, batch: Batch, spec: ExportSpec, context: Context) -> list[Any]:
    """The stories table's row from a plain row, in STORY_COLUMNS order, every value already a
    CSV/xlsx cell (text, a whole number or ""): the hot loop of a million-story export, built
    by position without an object per story."""
    occurred, circumstances, what_happened, outcome = _plain_answers(row, spec)
    finals = batch.final_codes.get(row[_ID])
    status = row[_STATUS]
    if status == "in_review" and spec.viewer.role != "admin":
        status = _status(cast(Any, _Story(row)), batch, spec.viewer)
    import_id = row[_IMPORT]
    return [
        row[0],
        row[2],
        utc_text(row[_SUBMITTED]) or "",
        row[4],
        context.imports.get(import_id, "") if import_id else "",
        row[6],
        row[7],
        occurred or "",
        day_text(row[_OCCURRED_ON]) or "",
        circumstances or "",
        what_happened or "",
        outcome or "",
        row[13],
        row[14] or "",
        row[15] or "",
        status,
        row[17] or "",
        utc_text(row[_FINALIZED]) or "",
        "" if row[19] is None else row[19],
        ";".join(c["code"] for c in finals) if finals else "",
        ";".join(sorted({context.versions.get(c["codebook_version_id"], "") for c in finals}))
        if finals
        else "",
        *(_attribute_cells(row[_ATTRIBUTES], spec, context) if context.attribute_keys else ()),
    ]


def story_header(context: Context) -> list[str]:
    return [*STORY_COLUMNS, *(f"attribute.{k}" for k in context.attribute_keys)]


def _spans_for_view(row: Row[Any], value: Any, view: View) -> Any:
    """Coded spans are stored against the original text; researchers get redacted offsets
    (mapped as the coding API maps them, app.incidents.redaction)."""
    if view == "original" or not value:
        return value
    moved = replacements_of(row.redaction_spans or {})
    out = []
    for span in value:
        start, end = moved.from_original(view, span["field"], int(span["start"]), int(span["end"]))
        out.append({**span, "start": start, "end": end})
    return out


def coding_records(
    row: Row[Any], batch: Batch, spec: ExportSpec, context: Context
) -> list[dict[str, Any]]:
    records = []
    for coding in batch.codings.get(row.id, []):
        spans = {
            d.code: _spans_for_view(row, batch.spans[(coding.id, d.code)], spec.view)
            for d in coding.codes
            if (coding.id, d.code) in batch.spans
        }
        records.append(
            {
                "incident_id": row.id,
                "coding_id": coding.id,
                "coder": coding.coder,
                "codebook": context.versions.get(coding.codebook_version_id),
                "codes": [d.code for d in coding.codes],
                "accepted_suggestions": [d.code for d in coding.codes if d.origin == "suggestion"],
                "manual_codes": [d.code for d in coding.codes if d.origin == "manual"],
                "rejected_suggestions": list(coding.rejected_suggestions),
                "excluded": coding.excluded,
                "exclusion_reason": coding.exclusion_reason,
                "note": coding.note,
                "spans": spans or None,
                "created_at": coding.created_at,
                "updated_at": coding.updated_at,
            }
        )
    return records


def nested_codings(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A story's coding records as the nested export holds them (the story's id is above)."""
    return [{k: v for k, v in c.items() if k != "incident_id"} for c in records]


def _suggestion_rows(session: Session, rows: Sequence[Any]) -> Iterator[Any]:
    """The stories' suggestion rows, `items` as the JSON text stored (parsed only if needed);
    read by the batch's id range, then narrowed to the batch's stories."""
    if not rows:
        return
    members = {r[0] for r in rows}
    for found in _suggestion_range(session, rows):
        if found[0] in members:
            yield found


def suggestion_rows(session: Session, rows: Sequence[Any]) -> list[Any]:
    """`_suggestion_rows` in story id order (one suggestion row per story), as the suggestions
    table lists them, as the driver's rows (the columns are read raw: plain text and numbers),
    without a SQLAlchemy row each."""
    if not rows:
        return []
    members = {r[0] for r in rows}
    result = _suggestion_range(session, rows)
    found = result.cursor.fetchall() if result.cursor is not None else []
    result.close()
    return sorted((r for r in found if r[0] in members), key=itemgetter(0))


def suggestion_row(
    incident_id: int, item: dict[str, Any], model_id: Any, version: str | None, created: Any
) -> list[Any]:
    """One suggestion item's row of the suggestions table (the reference the line builder,
    `lines.suggestion_lines`, writes the bytes of)."""
    evidence = item.get("evidence")
    return [
        incident_id,
        item.get("code"),
        item.get("score"),
        "true" if item.get("suggested") else "false",
        item.get("source"),
        model_id,
        version,
        created,
        orjson.dumps(evidence).decode() if evidence else None,
    ]


def _suggestion_range(session: Session, rows: Sequence[Any]) -> Any:
    return session.connection().execute(
        select(
            Suggestion.incident_id,
            sql_cast(Suggestion.items, Text).label("items"),
            Suggestion.codebook_version_id,
            Suggestion.model_id,
            _raw(Suggestion.created_at),
        ).where(Suggestion.incident_id.between(rows[0][0], rows[-1][0]))
    )


def suggestion_sets(
    session: Session, rows: Sequence[Row[Any]], context: Context
) -> dict[int, dict[str, Any]]:
    """Per story, its suggestion set for the nested export, the items passed through as the
    JSON text stored (orjson.Fragment: no parse, no re-serialisation)."""
    return {
        incident_id: {
            "codebook": context.versions.get(version_id),
            "model_id": model_id,
            "created_at": utc_text(created_at),
            "items": orjson.Fragment(items),
        }
        for incident_id, items, version_id, model_id, created_at in _suggestion_rows(session, rows)
    }


def suggestion_batches(
    session: Session, rows: Sequence[Row[Any]], context: Context
) -> dict[int, list[dict[str, Any]]]:
    found: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for incident_id, items, version_id, model_id, created_at in _suggestion_rows(session, rows):
        version = context.versions.get(version_id)
        created_at = utc_text(created_at)
        for item in orjson.loads(items):
            found[incident_id].append(
                {
                    "incident_id": incident_id,
                    "code": item.get("code"),
                    "score": item.get("score"),
                    "suggested": item.get("suggested"),
                    "layer": item.get("source"),
                    "model_id": model_id,
                    "codebook": version,
                    "created_at": created_at,
                    "evidence": item.get("evidence") or [],
                }
            )
    return found


def _has_adjudications(session: Session) -> bool:
    """Most studies have few or none: one look, remembered for the export's session."""
    known = session.info.get("cit_has_adjudications")
    if known is None:
        known = (
            session.scalar(
                select(AuditEvent.id)
                .where(AuditEvent.entity_type == "incident", AuditEvent.action == ADJUDICATE)
                .limit(1)
            )
            is not None
        )
        session.info["cit_has_adjudications"] = known
    return bool(known)


def adjudication_batches(
    session: Session, rows: Sequence[Row[Any]]
) -> dict[int, list[dict[str, Any]]]:
    found: dict[int, list[dict[str, Any]]] = defaultdict(list)
    if not _has_adjudications(session):
        return found
    ids = {str(r[0]): r[0] for r in rows}
    for actor, at, entity_id, after in session.execute(
        select(AuditEvent.actor_name, AuditEvent.at, AuditEvent.entity_id, AuditEvent.after)
        .where(
            AuditEvent.entity_type == "incident",
            AuditEvent.action == ADJUDICATE,
            AuditEvent.entity_id.in_(list(ids)),
        )
        .order_by(AuditEvent.id)
    ):
        after = after or {}
        found[ids[entity_id]].append(
            {
                "incident_id": ids[entity_id],
                "adjudicated_by": actor,
                "at": at,
                "final_codes": list(after.get("final_codes") or []),
                "excluded": after.get("status") == "excluded",
                "exclusion_reason": after.get("exclusion_reason"),
                "note": after.get("note"),
            }
        )
    return found


def table_rows(
    session: Session, spec: ExportSpec, context: Context, table: str
) -> Iterator[list[Any]]:
    """The rows of one table (no header), batch by batch."""
    if table == "stories":
        for batch in story_batches(session, spec, codings=False, plain=True):
            for row in batch.rows:
                yield story_row(row, batch, spec, context)
    elif table == "codings":
        for coded in coded_batches(session, spec):
            stories, batch = coded_stories(session, spec, coded)
            for story in stories:
                for record in coding_records(cast(Any, story), batch, spec, context):
                    yield [record[c] for c in CODING_COLUMNS]
    elif table == "suggestions":
        for ids in _plain_batches(session, spec):
            for incident_id, items, version_id, model_id, created_at in suggestion_rows(
                session, ids
            ):
                version = context.versions.get(version_id)
                created = utc_text(created_at)
                for item in orjson.loads(items):
                    yield suggestion_row(incident_id, item, model_id, version, created)
    elif table == "adjudications":
        if not _has_adjudications(session):
            return  # most studies: no story's id needs reading
        for ids in _plain_batches(session, spec):
            found = adjudication_batches(session, ids)
            for row in ids:
                for record in found.get(row[0], []):
                    yield [record[c] for c in ADJUDICATION_COLUMNS]
    else:  # pragma: no cover - the router validates the table name
        raise ValueError(table)


def headers(context: Context) -> dict[str, list[str]]:
    return {
        "stories": story_header(context),
        "codings": list(CODING_COLUMNS),
        "suggestions": list(SUGGESTION_COLUMNS),
        "adjudications": list(ADJUDICATION_COLUMNS),
    }


def coded_batches(session: Session, spec: ExportSpec) -> Iterator[list[int]]:
    """The ids of the exported stories that have a coding, in id order, a batch at a time:
    the codings table reads only these stories (at a million stories of which a tenth are
    coded, reading every story's row for its codings was a third of the whole zip's time)."""
    conditions = _batch_conditions(session, spec)
    # An alias: a filter's own EXISTS over codings (a researcher's status) stays correlated
    # with the story alone.
    coding = aliased(Coding)
    last = 0
    while True:
        ids = list(
            session.connection()
            .execute(
                select(coding.incident_id)
                .join(Incident, Incident.id == coding.incident_id)
                # The story's id bounded too: else PostgreSQL hashed every story up to the
                # export's last for each batch (137 ms a batch at 100,000 stories).
                .where(*conditions, coding.incident_id > last, Incident.id > last)
                .distinct()
                .order_by(coding.incident_id)
                .limit(BATCH)
            )
            .scalars()
        )
        if not ids:
            return
        last = ids[-1]
        yield ids
        if len(ids) < BATCH:
            return


class _Decision(NamedTuple):
    code: str
    origin: str


class _Coding(NamedTuple):
    """The fields of a CodingRead that `coding_records` and `visible_codings` read."""

    id: int
    coder: str
    codebook_version_id: int
    codes: list[_Decision]
    rejected_suggestions: list[str]
    excluded: bool
    exclusion_reason: str | None
    note: str | None
    created_at: Any
    updated_at: Any


class _CodedStory(NamedTuple):
    """What `visible_codings` and `coding_records` read of a story."""

    id: int
    coders_required: int | None
    redaction_spans: dict[str, Any] | None


def coded_stories(
    session: Session, spec: ExportSpec, ids: Sequence[int]
) -> tuple[list[_CodedStory], Batch]:
    """These stories (with codings, of the export) and a batch of their codings as the viewer
    sees them, with the spans: what `story_batches(codings=True)` gives the codings table, from
    Core rows (`load_codings` builds an ORM object and a validated CodingRead per coding, and
    the story's text for its spans: ~175 µs a coding, the codings table's whole time)."""
    connection = session.connection()
    redacted = spec.view != "original"
    # Read by the batch's id range (an IN of 2,000 ids was 8,000 bound parameters a batch to
    # render and send), narrowed to the batch's stories here.
    members = set(ids)
    first, last = min(ids), max(ids)
    coded = exists().where(Coding.incident_id == Incident.id)
    stories = [
        _CodedStory(incident_id, required, (_json(spans) or {}) if redacted else None)
        for incident_id, required, spans in connection.execute(
            select(Incident.id, Incident.coders_required, _raw(Incident.redaction_spans))
            .where(Incident.id.between(first, last), coded)
            .order_by(Incident.id)
        )
        if incident_id in members
    ]
    decisions: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for coding_id, code, decision in connection.execute(
        select(CodingCode.coding_id, CodingCode.code, CodingCode.decision)
        .join(Coding, Coding.id == CodingCode.coding_id)
        .where(Coding.incident_id.between(first, last))
        .order_by(CodingCode.id)
    ):
        decisions[coding_id].append((code, decision))
    found: dict[int, list[_Coding]] = defaultdict(list)
    for (
        coding_id,
        incident_id,
        coder,
        version_id,
        excluded,
        reason,
        note,
        at,
        up,
    ) in connection.execute(
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
        )
        .join(User, User.id == Coding.coder_id)
        .where(Coding.incident_id.between(first, last))
        .order_by(Coding.id)
    ):
        if incident_id not in members:
            continue
        made = decisions[coding_id]
        found[incident_id].append(
            _Coding(
                coding_id,
                coder,
                version_id,
                [
                    _Decision(code, "suggestion" if decision == "accepted" else "manual")
                    for code, decision in made
                    if decision != "rejected"
                ],
                [code for code, decision in made if decision == "rejected"],
                excluded,
                reason,
                note,
                at,
                up,
            )
        )
    visible: dict[int, list[Any]] = {
        story.id: visible_codings(cast(Incident, story), cast(Any, found[story.id]), spec.viewer)
        for story in stories
        if story.id in found
    }
    shown = {c.id for codings in visible.values() for c in codings}
    spans: dict[tuple[int, str], Any] = {}
    if shown:
        for coding_id, span_code, span_field, start, end in connection.execute(
            select(
                CodingCode.coding_id,
                CodingCode.code,
                CodingSpan.field,
                CodingSpan.start,
                CodingSpan.end,
            )
            .join(CodingSpan, CodingSpan.coding_code_id == CodingCode.id)
            .join(Coding, Coding.id == CodingCode.coding_id)
            .where(Coding.incident_id.between(first, last))
            .order_by(CodingSpan.id)
        ):
            if coding_id in shown:
                spans.setdefault((coding_id, span_code), []).append(
                    {"field": span_field, "start": start, "end": end}
                )
    return stories, Batch([], {}, visible, spans)


def _plain_batches(session: Session, spec: ExportSpec) -> Iterator[Sequence[Any]]:
    """Only the ids of the exported stories, a batch at a time (for the side tables), as the
    driver's rows (a 1-tuple each, the id first as in a story row): a SQLAlchemy row each cost
    more than the index scan that finds them."""
    conditions = _batch_conditions(session, spec)
    last = 0
    while True:
        result = session.connection().execute(
            select(Incident.id)
            .where(*conditions, Incident.id > last)
            .order_by(Incident.id)
            .limit(BATCH * 5)
        )
        rows = result.cursor.fetchall() if result.cursor is not None else []
        result.close()
        if not rows:
            return
        last = rows[-1][0]
        yield rows
        if len(rows) < BATCH * 5:
            return


def nested_records(
    session: Session, spec: ExportSpec, context: Context, *, only: Sequence[int] | None = None
) -> Iterator[dict[str, Any]]:
    """One object per story with everything nested (the JSONL export), built from plain rows
    by position (as `story_row`): the story's fields as the stories table has them, its final
    codes, codings, suggestion set and adjudications. `only`: just these stories."""
    admin = spec.viewer.role == "admin"
    versions = context.versions
    imports = context.imports
    for batch in story_batches(session, spec, codings=True, plain=True, only=only):
        suggestions = suggestion_sets(session, batch.rows, context)
        adjudications = adjudication_batches(session, batch.rows)
        for row in batch.rows:
            incident_id = row[_ID]
            occurred, circumstances, what_happened, outcome = _plain_answers(row, spec)
            status = row[_STATUS]
            story = _Story(row) if status == "in_review" or incident_id in batch.codings else None
            if status == "in_review" and not admin:
                status = _status(cast(Any, story), batch, spec.viewer)
            import_id = row[_IMPORT]
            yield {
                "id": incident_id,
                "survey_id": row[2],
                "submitted_at": utc_text(row[_SUBMITTED]),
                "source": row[4],
                "import_file": imports.get(import_id) if import_id else None,
                "consent": row[6],
                "language": row[7],
                "occurred": occurred,
                "occurred_on": day_text(row[_OCCURRED_ON]),
                "circumstances": circumstances,
                "what_happened": what_happened,
                "outcome": outcome,
                "valence": row[13],
                "touchpoint": row[14],
                "channel": row[15],
                "status": status,
                "exclusion_reason": row[17],
                "finalized_at": utc_text(row[_FINALIZED]),
                "coders_required": row[19],
                "final_codes": final_code_records(batch.final_codes.get(incident_id, ()), versions),
                "attributes": _attribute_document(row[_ATTRIBUTES], spec, context),
                "codings": nested_codings(coding_records(cast(Any, story), batch, spec, context))
                if story is not None
                else [],
                "suggestions": suggestions.get(incident_id),
                "adjudications": [
                    {k: v for k, v in a.items() if k != "incident_id"}
                    for a in adjudications.get(incident_id, ())
                ],
            }


__all__ = ["REDACTED_FIELDS", "TABLES", "ExportSpec"]
