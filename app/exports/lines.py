"""The stories table as CSV lines built by the database: one text column per story holding
the whole line (every cell quoted as Python's csv module quotes it), so that Python only joins
the lines and encodes them. At a million stories the per-row Python work of the reference
builder (`service.story_row` + csv.writer) is what bounds an export; a faster CSV library would
still leave the row builder, a string formatted by SQL leaves neither.

Byte for byte what `formats.csv_chunks(story_header(...), table_rows(... "stories"))` writes
(the Python builder stays the reference, and the test compares both): CPython's QUOTE_MINIMAL
quotes a cell when it holds `,` `"` CR or LF (its only other rule, a row of one empty cell, never
applies to a 21-column row), doubling `"`; lines end with CRLF.

What SQL does not do is left to Python, per story, in the same order:
- a story the viewer reads redacted that has no redacted document yet (stored before redaction
  existed) is redacted on the fly, and a researcher's view of a story `in_review` depends on
  the blind-coding rules: the database marks those lines NULL and the reference builder makes
  them;
- the attribute columns, which researchers read redacted: once per stored attributes document
  (a million stories share a few dozen), the document's cells formatted by csv.writer, then
  appended to each line that has it.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator, Sequence
from operator import itemgetter
from typing import Any

import orjson
from sqlalchemy import literal_column, select
from sqlalchemy.orm import Session

from app.db import BINARY_ROWS
from app.exports.formats import row_cells
from app.exports.service import (
    Context,
    ExportSpec,
    _attribute_cells,
    _batch_conditions,
    _plain_batches,
    story_batches,
    story_row,
    suggestion_row,
    suggestion_rows,
    utc_text,
)
from app.models import ImportRun, Incident, IncidentCode

BATCH = 5000
_MEMO_SEGMENTS = 10_000
# The characters after which CPython's csv (QUOTE_MINIMAL, "," and '"', CRLF) quotes a cell.
_SPECIAL = ',"\r\n'


class _Dialect:
    """The few SQL expressions that differ between SQLite and PostgreSQL."""

    def __init__(self, postgresql: bool) -> None:
        self.pg = postgresql

    def find(self, text: str, part: str) -> str:
        """The position of `part` in `text` (0: not there)."""
        return f"{'strpos' if self.pg else 'instr'}({text}, '{part}')"

    def cell(self, e: str) -> str:
        """A text expression as a CSV cell (NULL as empty): quoted when it holds one of
        `,` `"` CR LF (instr: several times faster than one GLOB on SQLite)."""
        test = " + ".join(self.find(e, c) for c in _SPECIAL.replace("'", "''"))
        quoted = f"'\"' || replace({e}, '\"', '\"\"') || '\"'"
        return f"(CASE WHEN {test} > 0 THEN {quoted} ELSE COALESCE({e}, '') END)"

    def utc(self, t: str) -> str:
        """`service.utc_text` of a raw stored time (NULL as empty), in one pass (printf /
        concat; the `||` chain with a substr per piece was a tenth of a JSONL line's SQL)."""
        return self._utc(t, "''", "")

    def _utc(self, t: str, null: str, mark: str) -> str:
        """The time as `utc_text` makes it, between `mark`s; `null` for NULL. PostgreSQL's
        text of a time (`raw_time`) has no T and prints no fraction for a whole second (and
        none of a fraction's trailing zeros): the date, T for the space, the rest, the zone.
        SQLite's stored text may hold T (converted already: as it is) or a fraction of zeros (left
        out, as `utc_text` leaves out one that `strip(".0")` empties)."""
        if self.pg:
            # `t` once: in a CTE that is not materialized it is the conversion of the time to
            # text, done again for every reference.
            dated = f"overlay({t} placing 'T' from 11 for 1)"
            return f"COALESCE('{mark}' || {dated} || '+00:00{mark}', {null})"
        fraction = f"substr({t}, 20)"
        return (
            f"(CASE WHEN {t} IS NULL THEN {null} "
            f"WHEN instr({t}, 'T') > 0 THEN '{mark}' || {t} || '{mark}' "
            f"ELSE printf('{mark}%.10sT%.8s%s+00:00{mark}', {t}, substr({t}, 12), "
            f"(CASE WHEN trim({fraction}, '.0') <> '' THEN {fraction} ELSE '' END)) END)"
        )

    def quote(self, e: str) -> str:
        """A text expression as a JSON value (NULL as null), escaped as orjson escapes it:
        `"` `\\` and the control characters (\\b \\t \\n \\f \\r, else \\u00xx), nothing else."""
        if self.pg:
            return f"COALESCE(CAST(to_json(CAST({e} AS TEXT)) AS TEXT), 'null')"
        return f"json_quote({e})"

    def json_utc(self, t: str) -> str:
        """`service.utc_text` of a raw stored time as a JSON value (nothing in it to escape)."""
        return self._utc(t, "'null'", '"')

    def join(self, pieces: list[tuple[str, str | None]]) -> str:
        """Literal text and (non-NULL) text expressions in turn, as one text: in one pass
        (SQLite's printf, PostgreSQL's concat), where `||` copies the growing line once per
        piece (twice the time of the line's whole SQL on SQLite)."""
        if self.pg:
            args = [f"'{text}'" + (f", {e}" if e else "") for text, e in pieces]
            return f"concat({', '.join(args)})"
        template = "".join(text.replace("%", "%%") + ("%s" if e else "") for text, e in pieces)
        values = "".join(f", {e}" for _, e in pieces if e)
        return f"printf('{template}'{values})"

    def raw_time(self, column: str) -> str:
        return f"CAST(({column}) AT TIME ZONE 'UTC' AS TEXT)" if self.pg else column

    def text(self, column: str) -> str:
        return f"CAST({column} AS TEXT)" if self.pg else column

    def answer(self, field: str) -> str:
        if self.pg:
            return f"(incidents.redacted ->> '{field}')"
        return f"json_extract(incidents.redacted, '$.{field}')"

    def no_redacted_document(self) -> str:
        """`not redacted` in Python: NULL, JSON null, an empty object (or not an object)."""
        if self.pg:
            return (
                "(incidents.redacted IS NULL OR jsonb_typeof(incidents.redacted) <> 'object' "
                "OR incidents.redacted = '{}'::jsonb)"
            )
        return (
            "(incidents.redacted IS NULL OR json_type(incidents.redacted) IS NOT 'object' "
            "OR trim(incidents.redacted, '{} ' || char(9, 10, 13)) = '')"
        )


def _columns(d: _Dialect, spec: ExportSpec) -> list[Any]:
    """The batch's values (the CTE `b`), each computed once per story."""
    view = spec.view
    columns: dict[str, str] = {
        "id": "incidents.id",
        "survey_id": "incidents.survey_id",
        "submitted_at": d.raw_time("incidents.submitted_at"),
        "source": "incidents.source",
        "import_file": "imports.file_name",
        "consent": "incidents.consent",
        "language": "incidents.language",
        "occurred_on": d.text("incidents.occurred_on"),
        "valence": "incidents.valence",
        "touchpoint": "incidents.touchpoint",
        "channel": "incidents.channel",
        "status": "incidents.status",
        "exclusion_reason": "incidents.exclusion_reason",
        "finalized_at": d.raw_time("incidents.finalized_at"),
        "coders_required": "incidents.coders_required",
        "attributes": d.text("incidents.attributes"),
    }
    if view == "original":
        columns |= {
            "occurred": "incidents.occurred_text",
            "circumstances": "incidents.circumstances",
            "what_happened": "incidents.what_happened",
            "outcome": "incidents.outcome",
            "python": "0",
        }
    else:
        gate = "TRUE"
        if spec.redaction is not None:
            marker = spec.redaction.replace("'", "''")
            gate = f"(incidents.redacted_with IS NOT NULL AND incidents.redacted_with = '{marker}')"
        for field in ("occurred", "circumstances", "what_happened", "outcome"):
            # Not yet redacted as required: no text at all.
            columns[field] = f"(CASE WHEN {gate} THEN {d.answer(field)} END)"
        columns["python"] = f"(CASE WHEN {gate} AND {d.no_redacted_document()} THEN 1 ELSE 0 END)"
    if spec.viewer.role != "admin":  # blind coding decides what a researcher sees of in_review
        columns["python"] = (
            f"(CASE WHEN incidents.status = 'in_review' THEN 1 ELSE {columns['python']} END)"
        )
    return [literal_column(sql).label(name) for name, sql in columns.items()]


def _line(d: _Dialect) -> str:
    """The CSV line (no terminator, no attribute columns) from the CTE's columns, NULL when
    Python builds the story's line; assembled in one pass (`_Dialect.join`: `||` copied the
    growing line once per cell, a third of the query's time on SQLite) and handed over as
    `_out` gives it."""
    cells = [
        "CAST(b.id AS TEXT)",
        "CAST(b.survey_id AS TEXT)",
        d.utc("b.submitted_at"),
        "b.source",  # checked values: never quoted
        d.cell("b.import_file"),
        "b.consent",
        d.cell("b.language"),
        d.cell("b.occurred"),
        "COALESCE(b.occurred_on, '')",
        d.cell("b.circumstances"),
        d.cell("b.what_happened"),
        d.cell("b.outcome"),
        "b.valence",
        d.cell("b.touchpoint"),
        d.cell("b.channel"),
        "b.status",
        d.cell("b.exclusion_reason"),
        d.utc("b.finalized_at"),
        "COALESCE(CAST(b.coders_required AS TEXT), '')",
    ]
    joined = d.join([("" if i == 0 else ",", cell) for i, cell in enumerate(cells)])
    return f"CASE WHEN b.python = 1 THEN NULL ELSE {_out(d, joined)} END"


def _out(d: _Dialect, text: str) -> str:
    """A line's part as the driver hands it to Python: UTF-8 bytes, neither decoded into a str
    nor encoded back (that cost a fifth of the line on SQLite, and more on PostgreSQL, where
    a batch holding one non-ASCII character became a str of two or four bytes a character).
    SQLite: a BLOB; PostgreSQL: a bytea, read in the binary format (`batch_rows`: as the bytes,
    not hex-encoded)."""
    return f"convert_to({text}, 'UTF8')" if d.pg else f"CAST({text} AS BLOB)"


class _Parts:
    """The Python-made parts of a line, as UTF-8 bytes like the database's parts (`_out`)."""

    @staticmethod
    def text(value: str) -> bytes:
        return value.encode()

    @staticmethod
    def dumps(value: Any) -> bytes:
        return orjson.dumps(value)


def batch_rows(connection: Any, query: Any) -> list[Any]:
    """A batch's driver rows as they are (plain text and numbers, nothing to convert), put in
    id order here: an ORDER BY copied every line into a sorting table first. PostgreSQL sends
    them in its binary format (`db.BINARY_ROWS`), so the lines' bytea come as bytes."""
    result = connection.execute(query.execution_options(**{BINARY_ROWS: True}))
    rows = sorted(result.cursor.fetchall() if result.cursor is not None else [], key=itemgetter(0))
    result.close()
    return rows


def batches(connection: Callable[[], Any], query: Callable[[int], Any]) -> Iterator[list[Any]]:
    """The batches' rows of `query(after)` (keyset: the stories after the last one read), each
    run on `connection()` (a session's `connection`, or a connection of its own)."""
    last = 0
    while rows := batch_rows(connection(), query(last)):
        yield rows
        if len(rows) < BATCH:
            return
        last = rows[-1][0]


def _cells(values: list[Any]) -> str:
    """Cells as the end of a CSV line (",a,b"), quoted by csv.writer itself."""
    buffer = io.StringIO()
    # A first cell of its own, so that csv's rule for a row of one empty cell never applies.
    csv.writer(buffer, lineterminator="").writerow(["x", *values])
    return buffer.getvalue()[1:]


def _final_segments(
    session: Session, first: int, last: int, versions: dict[int, str], out: _Parts
) -> dict[int, Any]:
    """Per story of the id range that has final codes, its two cells (",codes,codebooks"):
    the codes ';'-joined in id order, their codebook versions distinct, sorted, ';'-joined,
    as `service.story_row` makes them. Read by the range, as `story_batches` reads them."""
    found: dict[int, tuple[list[str], set[str]]] = {}
    for incident_id, code, version_id in session.connection().execute(
        select(IncidentCode.incident_id, IncidentCode.code, IncidentCode.codebook_version_id)
        .where(IncidentCode.incident_id.between(first, last))
        .order_by(IncidentCode.incident_id, IncidentCode.id)
    ):
        codes, books = found.setdefault(incident_id, ([], set()))
        codes.append(code)
        books.add(versions.get(version_id, ""))
    return {
        incident_id: out.text(_cells([";".join(codes), ";".join(sorted(books))]))
        for incident_id, (codes, books) in found.items()
    }


def _python_lines(
    session: Session, spec: ExportSpec, context: Context, out: _Parts, ids: list[int]
) -> dict[int, Any]:
    """The reference builder's lines (no terminator) of these stories."""
    made: dict[int, Any] = {}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="")
    for batch in story_batches(session, spec, codings=False, plain=True, only=ids):
        for row in batch.rows:
            buffer.seek(0)
            buffer.truncate()
            writer.writerow(story_row(row, batch, spec, context))
            made[row[0]] = out.text(buffer.getvalue())
    return made


def story_lines(
    session: Session, spec: ExportSpec, context: Context, *, stats: dict[str, int] | None = None
) -> Iterator[bytes]:
    """The stories table's lines (CRLF after each) as UTF-8, a batch of stories at a time.
    `stats` counts the lines the database made ("sql") and those the reference builder made."""
    d = _Dialect(session.get_bind().dialect.name == "postgresql")
    out = _Parts()
    conditions = _batch_conditions(session, spec)
    columns = _columns(d, spec)
    line: Any = literal_column(_line(d))
    keys = bool(context.attribute_keys)
    segments: dict[Any, Any] = {}
    no_codes, crlf = out.text(",,"), out.text("\r\n")

    def query(after: int) -> Any:
        batch = (
            select(*columns)
            .select_from(Incident)
            .outerjoin(ImportRun, ImportRun.id == Incident.import_id)
            .where(*conditions, Incident.id > after)
            .order_by(Incident.id)
            .limit(BATCH)
            .cte("b")
            .prefix_with("MATERIALIZED")
        )
        return select(literal_column("b.id"), line, literal_column("b.attributes")).select_from(
            batch
        )

    for rows in batches(session.connection, query):
        first, last = rows[0][0], rows[-1][0]
        finals = _final_segments(session, first, last, context.versions, out).get
        if keys:
            get = segments.get
            lines: list[Any] = [
                None
                if text is None
                else text
                + finals(incident_id, no_codes)
                + (get(raw) or _add(segments, raw, spec, context, out))
                for incident_id, text, raw in rows
            ]
        else:
            lines = [
                None if text is None else text + finals(incident_id, no_codes)
                for incident_id, text, _ in rows
            ]
        if None in lines:
            missing = [r[0] for r, text in zip(rows, lines, strict=True) if text is None]
            made = _python_lines(session, spec, context, out, missing)
            lines = [
                made[r[0]] if text is None else text for r, text in zip(rows, lines, strict=True)
            ]
            made_by_python = len(missing)
        else:
            made_by_python = 0
        if stats is not None:
            stats["sql"] = stats.get("sql", 0) + len(rows) - made_by_python
            stats["python"] = stats.get("python", 0) + made_by_python
        lines.append(out.text(""))
        block = crlf.join(lines)
        yield block


def _add(
    segments: dict[Any, Any], raw: Any, spec: ExportSpec, context: Context, out: _Parts
) -> Any:
    """A stored attributes document's cells (",a,b"), remembered for the next stories."""
    segment = out.text(_cells(_attribute_cells(raw, spec, context)))
    if len(segments) < _MEMO_SEGMENTS:
        segments[raw] = segment
    return segment


# The suggestions table (one line per story and code): made in Python, but without csv.writer
# or a list per line. SQLite 3.40's JSON functions took ~50 µs a story to take the items apart
# (two and a half times the Python reference), so the stored items are parsed by orjson and
# each line is formatted here: the cells that repeat (code, layer, codebook version) quoted once
# per export, the others (scores, times, evidence) are text that csv.writer would write as is,
# or checked and quoted by the same rule. Anything unusual in an item (a code that is not a
# string, a score that is neither a number nor null) goes through csv.writer itself.
_QUOTE_TEST = re.compile(r'[,"\r\n]')
_SETS_PER_BLOCK = 1000


def _quoted(text: str) -> str:
    """A text cell as csv.writer (QUOTE_MINIMAL, the delimiter ',', CRLF) writes it."""
    if _QUOTE_TEST.search(text) is None:
        return text
    return '"' + text.replace('"', '""') + '"'


class _SuggestionLines:
    """The suggestions table's lines of driver rows (`service.suggestion_rows`), in Python."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self.versions = {vid: _quoted(name) for vid, name in context.versions.items()}
        # Code and layer cells by their value, quoted once (text only: any other value is
        # not found and goes through `text_cell`).
        self.texts: dict[Any, str] = {None: ""}

    def text_cell(self, value: Any) -> str | None:
        """A text or null cell; None for any other value (the reference line writes it)."""
        if value is None:
            return ""
        if type(value) is not str:
            return None
        made = _quoted(value)
        if len(self.texts) < _MEMO_SEGMENTS:
            self.texts[value] = made
        return made

    def lines(self, rows: Sequence[Any]) -> str:
        out: list[str] = []
        add = out.append
        texts, versions, text_cell = self.texts, self.versions, self.text_cell
        loads, dumps = orjson.loads, orjson.dumps
        for incident_id, items, version_id, model_id, created_at in rows:
            created = utc_text(created_at)
            after = (
                f",{'' if model_id is None else model_id},{versions.get(version_id, '')},"
                f"{'' if created is None else _quoted(created)},"
            )
            for item in loads(items):
                get = item.get
                code: str | None
                source: str | None
                try:
                    code, source = texts[get("code")], texts[get("source")]
                except (KeyError, TypeError):  # not seen yet, or not text (unhashable)
                    code, source = text_cell(get("code")), text_cell(get("source"))
                score = get("score")
                kind = type(score)
                if kind is float or kind is int:
                    score_text: str | None = repr(score)
                else:
                    score_text = "" if score is None else None
                if code is None or source is None or score_text is None:
                    add(
                        _reference_line(
                            incident_id, item, model_id, self.context, version_id, created
                        )
                    )
                    continue
                evidence = get("evidence")
                add(
                    f"{incident_id},{code},{score_text},{'true' if get('suggested') else 'false'},"
                    f"{source}{after}{_quoted(dumps(evidence).decode()) if evidence else ''}\r\n"
                )
        return "".join(out)


def suggestion_lines(session: Session, spec: ExportSpec, context: Context) -> Iterator[bytes]:
    """The suggestions table's lines (CRLF after each) as UTF-8, a batch of stories at a time:
    byte for byte what `formats.csv_chunks` writes of `service.table_rows(..., "suggestions")`
    (the reference, and the test compares both), formatted here on both databases: built by
    PostgreSQL from the jsonb items (jsonb_array_elements, the evidence re-serialised from its
    objects' keys) a story took ~98 µs of the server against ~14 µs of Python (bench/README.md,
    Exports at scale)."""
    made = _SuggestionLines(context)
    for ids in _plain_batches(session, spec):
        rows = suggestion_rows(session, ids)
        for first in range(0, len(rows), _SETS_PER_BLOCK):  # ~0.5 MB a block, not 10,000 sets
            yield made.lines(rows[first : first + _SETS_PER_BLOCK]).encode()


def _reference_line(
    incident_id: int,
    item: dict[str, Any],
    model_id: Any,
    context: Context,
    version_id: Any,
    created: Any,
) -> str:
    """One item's line by csv.writer, from the reference's row (`service.suggestion_row`)."""
    buffer = io.StringIO()
    row = suggestion_row(incident_id, item, model_id, context.versions.get(version_id), created)
    csv.writer(buffer, lineterminator="\r\n").writerow(row_cells(row))
    return buffer.getvalue()
