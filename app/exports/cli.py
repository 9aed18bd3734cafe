"""`cit export SURVEY --format csv|jsonl|xlsx|qdpx --out FILE`: the API's export, to a file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.cli_support import fail, ready
from app.db import session_scope
from app.errors import AppError
from app.exports import stream
from app.exports.service import CLI_VIEWER, TABLES, ExportSpec, count_stories
from app.incidents.redaction import required_redaction
from app.incidents.service import IncidentFilters
from app.surveys.service import get_survey


def export(
    survey: Annotated[int, typer.Argument(help="Survey id")],
    out: Annotated[Path, typer.Option("--out", "-o", help="File to write")],
    format: Annotated[str, typer.Option("--format", "-f", help="csv, jsonl, xlsx or qdpx")] = "csv",
    table: Annotated[
        str | None, typer.Option(help=f"csv/xlsx: only one table ({', '.join(TABLES)})")
    ] = None,
    redacted: Annotated[bool, typer.Option(help="Researchers' redacted text")] = False,
) -> None:
    """Export a survey's stories, codings, suggestions and adjudications (audited)."""
    if format not in (*stream.FORMATS, "qdpx"):
        fail(f"--format must be one of csv, jsonl, xlsx, qdpx, not {format!r}")
    if table is not None and table not in TABLES:
        fail(f"--table must be one of {', '.join(TABLES)}")
    settings, factory = ready()
    spec = ExportSpec(
        filters=IncidentFilters(survey_id=survey),
        view="redacted" if redacted else "original",
        viewer=CLI_VIEWER,
        redaction=required_redaction(settings.nlp_pipeline),
    )
    try:
        with session_scope(factory) as session:
            found = get_survey(session, survey)
            count = count_stories(session, spec)
            stream.record(session, None, spec, format, stories=count, table=table, survey_id=survey)
            title = found.title
    except AppError as exc:
        fail(exc.detail)
    partial = out.with_name(out.name + ".part")
    with partial.open("wb") as sink:
        if format == "qdpx":
            from app.refi.project import project_chunks

            chunks = project_chunks(factory, spec, survey)
        else:
            chunks = stream.chunks(factory, spec, format, table)
        for chunk in chunks:
            sink.write(chunk)
    partial.replace(out)
    typer.echo(f"{count} stories of survey {survey} ({title!r}) written to {out}")
