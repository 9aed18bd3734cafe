"""The JSONL export's lines built by the database: one text column per story holding the
story's fields and another its suggestion set as JSON, so that Python only inserts the final
codes, the attributes and the codings, joins and writes. At a million stories the per-story
Python work of the reference builder (`service.nested_records`: a dict per story, its final
codes, suggestion set and attributes, ORM objects and a CodingRead per coding, then orjson) is
what bounds the export, as `app.exports.lines` found for CSV.

Byte for byte what `formats.jsonl_chunks(service.nested_records(...))` writes (the Python
builder stays the reference, and the test compares both): the keys in the reference's order,
no spaces, text escaped as orjson escapes it (`"` `\\` and the control characters: SQLite's
json_quote and PostgreSQL's to_json escape the same, and neither escapes anything else), the
suggestion items passed through as the JSON text stored (the reference passes the same text
through as an orjson.Fragment, so no float is printed by SQL), one LF after each line.

What SQL does not do is left to Python, per story, in the same order:
- the final codes (a range query per batch, dumped by orjson per story that has some), the
  attributes (once per stored attributes document, as the view shows them) and the codings
  (driver rows through `service.coding_records`, blind coding by `visible_codings`);
- whole lines the reference builder makes: the database marks NULL those of the CSV lines'
  rules (a story the viewer reads redacted with no redacted document yet; a researcher's view
  of `in_review`), and Python holds back the adjudicated stories and those whose codings have
  spans (their offsets follow the view's text).
"""

from __future__ import annotations

import queue
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import Connection, and_, func, literal_column, select
from sqlalchemy.orm import Session

from app.exports.lines import BATCH, _columns, _Dialect, _out, _Parts, batch_rows, batches
from app.exports.service import (
    _MEMO_DOCUMENTS,
    Batch,
    Context,
    ExportSpec,
    _attribute_document,
    _batch_conditions,
    _Coding,
    _Decision,
    _has_adjudications,
    _raw,
    coding_records,
    final_code_records,
    final_codes,
    nested_codings,
    nested_records,
)
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
    line = d.join(
        [
            ('{"id":', "CAST(b.id AS TEXT)"),
            (',"survey_id":', "CAST(b.survey_id AS TEXT)"),
            (',"submitted_at":', d.json_utc("b.submitted_at")),
            (',"source":"', "b.source"),  # checked values: nothing to escape
            ('","import_file":', q("b.import_file")),
            (',"consent":"', "b.consent"),
            ('","language":', q("b.language")),
            (',"occurred":', q("b.occurred")),
            (',"occurred_on":', q("b.occurred_on")),
            (',"circumstances":', q("b.circumstances")),
            (',"what_happened":', q("b.what_happened")),
            (',"outcome":', q("b.outcome")),
            (',"valence":"', "b.valence"),
            ('","touchpoint":', q("b.touchpoint")),
            (',"channel":', q("b.channel")),
            (',"status":"', "b.status"),
            ('","exclusion_reason":', q("b.exclusion_reason")),
            (',"finalized_at":', d.json_utc("b.finalized_at")),
            (',"coders_required":', "COALESCE(CAST(b.coders_required AS TEXT), 'null')"),
            (',"final_codes":', None),
        ]
    )
    return f"CASE WHEN b.python = 1 THEN NULL ELSE {_out(d, line)} END"


def _tail(d: _Dialect) -> str:
    """The line after the codings: the suggestion set (its items as stored, as the reference
    passes them through), no adjudications."""
    suggestion = d.join(
        [
            ('{"codebook":', d.quote("k.key || ' v' || CAST(v.number AS TEXT)")),
            (',"model_id":', "COALESCE(CAST(s.model_id AS TEXT), 'null')"),
            (',"created_at":', d.json_utc(d.raw_time("s.created_at"))),
            (',"items":', d.text("s.items")),
            ("}", None),
        ]
    )
    return _out(
        d,
        d.join(
            [
                (',"suggestions":', f"(CASE WHEN s.id IS NULL THEN 'null' ELSE {suggestion} END)"),
                (',"adjudications":[]}', None),
            ]
        ),
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


class _Side(NamedTuple):
    """What a batch's lines take from other tables, read for the batch's id range by whoever
    reads the batch (a reader thread on its connection, or the session): the final codes (as
    `service.final_codes` gives them), the stories whose codings have spans, and the codings'
    decisions and rows (driver rows, built by `_codings`)."""

    finals: dict[int, list[dict[str, Any]]]
    spanned: set[int]
    decisions: Sequence[Any]
    codings: Sequence[Any]


class _Bound:
    """The one thing `service.final_codes` reads of a session, for a reader's connection."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def connection(self) -> Connection:
        return self._connection


def _side(connection: Connection, rows: list[Any]) -> tuple[list[Any], _Side] | None:
    """A batch's rows with what its lines take from other tables (None for no rows)."""
    if not rows:
        return None
    first, last = rows[0][0], rows[-1][0]
    spanned = set(
        connection.execute(
            select(Coding.incident_id)
            .join(CodingCode, CodingCode.coding_id == Coding.id)
            .join(CodingSpan, CodingSpan.coding_code_id == CodingCode.id)
            .where(Coding.incident_id.between(first, last))
            .distinct()
        ).scalars()
    )
    decisions = connection.execute(
        select(CodingCode.coding_id, CodingCode.code, CodingCode.decision)
        .join(Coding, Coding.id == CodingCode.coding_id)
        .where(Coding.incident_id.between(first, last))
        .order_by(CodingCode.id)
    ).all()
    result = connection.execute(
        select(
            Coding.id,
            Coding.incident_id,
            User.name,
            Coding.codebook_version_id,
            Coding.excluded,
            Coding.exclusion_reason,
            Coding.note,
            _raw(Coding.created_at),
            _raw(Coding.updated_at),
            Incident.coders_required,
        )
        .join(User, User.id == Coding.coder_id)
        .join(Incident, Incident.id == Coding.incident_id)
        .where(Coding.incident_id.between(first, last))
        .order_by(Coding.id)
    )
    # The driver's rows, times as UTC text: SQLAlchemy's per-row type processing (a regex per
    # SQLite time) cost more than the rest of the coding.
    codings = result.cursor.fetchall() if result.cursor is not None else []
    result.close()
    finals = final_codes(cast(Session, _Bound(connection)), first, last)
    return rows, _Side(finals, spanned, decisions, codings)


def _codings(spec: ExportSpec, context: Context, out: _Parts, side: _Side) -> dict[int, Any]:
    """Per story of the batch with codings the viewer sees, its `"codings":[...]` part,
    built by `service.coding_records` from Core rows (`load_codings` builds and validates an
    ORM object and a CodingRead per coding: the reference's largest cost per coded story; a
    pydantic model_construct still cost more than the rest of the story's line). The stories
    whose codings have spans (`side.spanned`) are made by the reference builder (their
    offsets follow the view's text)."""
    decisions: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for coding_id, code, decision in side.decisions:
        decisions[coding_id].append((code, decision))
    rows = side.codings
    found: dict[int, list[Any]] = defaultdict(list)
    required: dict[int, int | None] = {}
    for coding_id, incident_id, coder, version_id, excluded, reason, note, at, up, need in rows:
        made = decisions[coding_id]
        required[incident_id] = need
        # What coding_records reads of a CodingRead (load_codings builds those; no spans:
        # those stories go to the reference builder), the times as UTCDateTime reads them.
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
                bool(excluded),
                reason,
                note,
                datetime.fromisoformat(at).replace(tzinfo=UTC),
                datetime.fromisoformat(up).replace(tzinfo=UTC),
            )
        )
    parts: dict[int, Any] = {}
    prefix = out.text(',"codings":')
    for incident_id, codings in found.items():
        story = cast(Incident, _Required(incident_id, required[incident_id]))
        batch = Batch([], {}, {incident_id: visible_codings(story, codings, spec.viewer)}, {})
        records = nested_codings(coding_records(cast(Any, story), batch, spec, context))
        parts[incident_id] = prefix + out.dumps(records)
    return parts


class _Required(NamedTuple):
    """What `visible_codings` and `coding_records` read of a story without spans."""

    id: int
    coders_required: int | None


def _python_lines(
    session: Session, spec: ExportSpec, context: Context, out: _Parts, ids: list[int]
) -> dict[int, Any]:
    """The reference builder's lines (no terminator) of these stories."""
    return {
        record["id"]: out.dumps(record)
        for record in nested_records(session, spec, context, only=ids)
    }


READERS = 2


def _ends(session: Session, conditions: list[Any]) -> list[int]:
    """The last id of every full batch of the export's stories, in order (the keyset loop's
    boundaries, known up front so that several batches can be read at once): one pass over
    the matching ids (an index scan), a number per batch."""
    numbered = (
        select(Incident.id, func.row_number().over(order_by=Incident.id).label("n"))
        .where(*conditions)
        .subquery()
    )
    return list(
        session.connection()
        .execute(select(numbered.c.id).where(numbered.c.n % BATCH == 0).order_by(numbered.c.id))
        .scalars()
    )


def _ahead(
    session: Session,
    query: Callable[[int, int | None], Any],
    conditions: list[Any],
    readers: int = READERS,
) -> Iterator[tuple[list[Any], _Side]]:
    """PostgreSQL: the batches' rows and `_side`'s read ahead, `readers` batches at once, each
    reader a thread on a connection of its own that reads the export's snapshot
    (`pg_export_snapshot`: the same rows as the session would read): the server builds the
    next batches' lines (the line query is most of an export's time there) on as many cores
    while Python finishes this one's, and the side queries no longer wait in Python's path
    (they were a third of its time). Batch i (the ids after `_ends`' i-1th, up to its ith) goes
    to reader i % readers, and the batches come back in order, as `lines.batches` gives them.
    The connections come from a pool made for the export (`Pool.recreate`: the engine's
    settings; not one of the connections the API's pool holds for requests), disposed of at
    the end; each reader holds at most one batch besides the one it reads."""
    engine = session.get_bind()
    ends = _ends(session, conditions)
    ranges = list(zip([0, *ends], [*ends, None], strict=True))
    snapshot = session.connection().exec_driver_sql("SELECT pg_export_snapshot()").scalar_one()
    readers = max(1, min(readers, len(ranges)))
    pool = cast(Any, engine).pool.recreate()
    done = threading.Event()
    handoffs: list[queue.Queue[Any]] = [queue.Queue(maxsize=1) for _ in range(readers)]

    def put(handoff: queue.Queue[Any], item: Any) -> bool:
        while not done.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read(k: int) -> None:
        handoff = handoffs[k]
        try:
            with Connection(cast(Any, engine), connection=pool.connect()) as connection:
                connection.exec_driver_sql(
                    "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
                )
                connection.exec_driver_sql(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
                for after, upto in ranges[k::readers]:
                    if not put(
                        handoff, _side(connection, batch_rows(connection, query(after, upto)))
                    ):
                        break
                connection.rollback()
        except BaseException as error:  # handed to the reader, raised there
            put(handoff, error)

    threads = [
        threading.Thread(target=read, args=(k,), name=f"export-lines-{k}", daemon=True)
        for k in range(readers)
    ]
    for thread in threads:
        thread.start()
    try:
        for i in range(len(ranges)):
            item = handoffs[i % readers].get()
            if isinstance(item, BaseException):
                raise item
            if item is not None:
                yield item
    finally:
        done.set()
        for thread in threads:
            thread.join()
        pool.dispose()


def story_lines(
    session: Session,
    spec: ExportSpec,
    context: Context,
    *,
    stats: dict[str, int] | None = None,
    readers: int = READERS,
) -> Iterator[bytes]:
    """The JSONL lines (LF after each) as UTF-8, a batch of stories at a time. `stats` counts
    the lines the database made ("sql") and those the reference builder made. `readers`: on
    PostgreSQL, how many batches' line queries run at once, ahead of the one being written
    (`_ahead`; 0: one after the other on the session's connection)."""
    d = _Dialect(session.get_bind().dialect.name == "postgresql")
    out = _Parts()
    no_codes, no_codings = out.text(_NO_CODES), out.text(_NO_CODINGS)
    attributes, newline = out.text(',"attributes":'), out.text("\n")
    conditions = _batch_conditions(session, spec)
    columns = _columns(d, spec)
    head: Any = literal_column(_head(d))
    tail: Any = literal_column(_tail(d))
    segments: dict[Any, Any] = {}
    versions = context.versions

    def query(after: int, upto: int | None = None) -> Any:
        bounded = [] if upto is None else [Incident.id <= upto]
        # The batch's id range on the suggestions too: one merge join over two index ranges
        # instead of an index lookup per story (PostgreSQL, ~2 us of ~20 per story).
        suggested = [_S.c.incident_id > after]
        if upto is not None:
            suggested.append(_S.c.incident_id <= upto)
        batch = (
            select(*columns)
            .select_from(Incident)
            .outerjoin(ImportRun, ImportRun.id == Incident.import_id)
            .where(*conditions, Incident.id > after, *bounded)
            .order_by(Incident.id)
            .limit(BATCH)
            # Not materialized (as the CSV lines' CTE is): every column is read once, and
            # SQLite then streams the batch instead of copying its texts into a table first.
            .cte("b")
        )
        return select(
            literal_column("b.id"), head, literal_column("b.attributes"), tail
        ).select_from(
            batch.outerjoin(_S, and_(_S.c.incident_id == batch.c.id, *suggested))
            .outerjoin(_V, _V.c.id == _S.c.codebook_version_id)
            .outerjoin(_K, _K.c.id == _V.c.codebook_id)
        )

    if d.pg and readers:
        read: Iterator[Any] = _ahead(session, query, conditions, readers)
    else:
        # SQLite: one batch after the other. A reader thread on the session's connection was
        # measured (1M stories, alternating, load 2-4.5): no faster (18.8-27.4k stories/s
        # against 28.4-30.1k without), CPU the same.
        read = (_side(session.connection(), rows) for rows in batches(session.connection, query))
    for rows, side in read:
        finals = {
            incident_id: out.dumps(final_code_records(codes, versions)) + attributes
            for incident_id, codes in side.finals.items()
        }.get
        get = segments.get
        coded = _codings(spec, context, out, side).get
        held = side.spanned | _adjudicated(session, [r[0] for r in rows])
        missing = [r[0] for r in rows if r[1] is None or r[0] in held]
        made = _python_lines(session, spec, context, out, missing) if missing else {}
        # The batch's pieces in one list, joined once: a line assembled by `+` copied its
        # ~1.4 KB again for each of its four pieces (a sixth of Python's time per story).
        parts: list[Any] = []
        extend = parts.extend
        for incident_id, text, raw, end in rows:
            if made and incident_id in made:
                extend((made[incident_id], newline))
            else:
                extend(
                    (
                        text,
                        finals(incident_id, no_codes),
                        get(raw) or _add(segments, raw, spec, context, out),
                        coded(incident_id, no_codings),
                        end,
                        newline,
                    )
                )
        if stats is not None:
            stats["sql"] = stats.get("sql", 0) + len(rows) - len(missing)
            stats["python"] = stats.get("python", 0) + len(missing)
        yield b"".join(parts)


def _add(
    segments: dict[Any, Any], raw: Any, spec: ExportSpec, context: Context, out: _Parts
) -> Any:
    """A stored attributes document as the view shows it, dumped, remembered for the next
    stories."""
    segment = out.dumps(_attribute_document(raw, spec, context))
    if len(segments) < _MEMO_DOCUMENTS:
        segments[raw] = segment
    return segment
