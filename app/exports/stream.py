"""Running an export: one read-only snapshot, the chosen format's chunks, the audit record.

The API streams these chunks and `cit export` writes them to a file: the same code path."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session, sessionmaker

from app import audit
from app.db import session_scope
from app.exports import formats, json_lines, lines, service, side
from app.exports.service import ExportSpec

if TYPE_CHECKING:
    from app.auth import Principal

FORMATS = ("csv", "jsonl", "xlsx")
EXPORT = "survey.export"


def _snapshot(session: Session) -> None:
    """Every table of the export from the same moment (PostgreSQL: one REPEATABLE READ
    transaction; SQLite in WAL mode reads one snapshot per transaction anyway)."""
    if session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})


def table_chunks(
    session: Session,
    spec: ExportSpec,
    context: service.Context,
    table: str,
    header: list[str],
    sql: bool,
) -> Iterator[bytes]:
    """One table's CSV chunks (what the zip's member holds, and `table=` exports alone)."""
    if table == "stories" and sql:
        # The lines built by the database (app.exports.lines), byte for byte the same.
        return formats.line_chunks(header, lines.story_lines(session, spec, context))
    if table == "suggestions" and sql:
        # The lines formatted without csv.writer (app.exports.lines), byte for byte the same.
        return formats.line_chunks(header, lines.suggestion_lines(session, spec, context))
    return formats.csv_chunks(
        header, service.table_rows(session, spec, context, table), cells=table == "stories"
    )


def chunks(
    factory: sessionmaker[Session],
    spec: ExportSpec,
    fmt: str,
    table: str | None = None,
    *,
    sql: bool = True,
    parallel_from: int | None = None,
) -> Iterator[bytes]:
    """The export's bytes. CSV: one table as plain CSV when `table` is given, else every table
    as a CSV file in a zip; xlsx: one sheet per table; JSONL: one nested object per story.
    `sql`: the stories table's CSV lines and the JSONL lines made by the database, the
    suggestions table's lines by `lines.suggestion_lines` (False: by the Python builders and
    csv.writer, the reference they equal). The zip of `parallel_from` stories or more (None:
    `side.PARALLEL_FROM`) makes its side tables' members (`side.SIDE_TABLES`: the suggestions,
    on SQLite the codings too) in a second process, beside the stories member
    (`app.exports.side`; the same bytes)."""
    engine = factory.kw.get("bind")
    helper: side.SideTables | None = None
    if (
        fmt == "csv"
        and table is None
        and sql
        and engine is not None
        and side.possible(engine)
        and side.large(
            factory, spec, side.PARALLEL_FROM if parallel_from is None else parallel_from
        )
    ):
        helper = side.SideTables(engine, spec, side.side_tables(engine))
    try:
        yield from _chunks(factory, spec, fmt, table, sql, helper)
    finally:
        if helper is not None:
            helper.close()


def _chunks(
    factory: sessionmaker[Session],
    spec: ExportSpec,
    fmt: str,
    table: str | None,
    sql: bool,
    helper: side.SideTables | None,
) -> Iterator[bytes]:
    with session_scope(factory, write=False) as session:
        _snapshot(session)
        if helper is not None:
            helper.share(session)
        # The attribute columns (a pass over every exported story's attributes) are the
        # stories table's: not read for JSONL (nested) or one side table alone.
        context = service.load_context(
            session, spec, with_attributes=fmt != "jsonl" and table in (None, "stories")
        )
        heads = service.headers(context)
        tables = (table,) if table else service.TABLES
        if fmt == "jsonl" and sql:
            # The lines built by the database (app.exports.json_lines), byte for byte the same.
            yield from json_lines.story_lines(session, spec, context)
        elif fmt == "jsonl":
            yield from formats.jsonl_chunks(service.nested_records(session, spec, context))
        elif fmt == "xlsx":
            yield from formats.xlsx_chunks(
                (name, heads[name], service.table_rows(session, spec, context, name))
                for name in tables
            )
        elif table is not None:
            yield from table_chunks(session, spec, context, table, heads[table], sql)
        else:
            yield from formats.zip_chunks(
                (
                    f"{name}.csv",
                    lambda name=name: (  # type: ignore[misc]
                        helper.chunks(name)
                        if helper is not None and name in helper.tables
                        else table_chunks(session, spec, context, name, heads[name], sql)
                    ),
                )
                for name in tables
            )


def media_type(fmt: str, table: str | None) -> str:
    if fmt == "csv":
        return "text/csv; charset=utf-8" if table else "application/zip"
    if fmt == "jsonl":
        return "application/x-ndjson"
    return "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def file_name(stem: str, fmt: str, table: str | None) -> str:
    if fmt == "csv":
        return f"{stem}-{table}.csv" if table else f"{stem}.zip"
    return f"{stem}.{fmt}"


def record(
    session: Session,
    actor: Principal | None,
    spec: ExportSpec,
    fmt: str,
    *,
    stories: int,
    table: str | None = None,
    survey_id: int | None = None,
) -> None:
    """Every export goes to the audit trail: who, which stories, which view, how many."""
    filters = {k: v for k, v in vars(spec.filters).items() if v is not None}
    audit.record(
        session,
        actor,
        EXPORT,
        "survey" if survey_id is not None else "incidents",
        survey_id if survey_id is not None else "all",
        after={
            "format": fmt,
            "table": table,
            "view": spec.view,
            "stories": stories,
            "filters": {k: str(v) for k, v in filters.items()},
        },
    )
