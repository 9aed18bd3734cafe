"""`cit import incidents FILE --survey ID [--map A=B] [--default k=v] [--dry-run]`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from tqdm import tqdm

from app.cli_support import fail, ready
from app.imports.files import FileUnreadable, count_records, open_table
from app.imports.service import (
    ImportFailed,
    ImportOptions,
    ImportReport,
    dry_run,
    import_file,
    parse_pairs,
)

import_cli = typer.Typer(help="Import data from earlier studies.", no_args_is_help=True)
SHOWN_ERRORS = 200


def _errors(report: ImportReport) -> None:
    for error in report.errors[:SHOWN_ERRORS]:
        typer.echo(str(error), err=True)
    if report.error_count > SHOWN_ERRORS:
        typer.echo(f"… and {report.error_count - SHOWN_ERRORS} more", err=True)


@import_cli.command("incidents")
def import_incidents_command(
    file: Annotated[Path, typer.Argument(help=".csv/.tsv, .jsonl or .xlsx; see the README")],
    survey: Annotated[int, typer.Option(help="Survey id the stories belong to")],
    map_: Annotated[
        list[str] | None,
        typer.Option(
            "--map",
            help="'SOURCE COLUMN=field' (repeat), "
            "e.g. 'Consumer complaint narrative=what_happened'",
        ),
    ] = None,
    default: Annotated[
        list[str] | None,
        typer.Option(help="'field=value' for empty cells (repeat), e.g. valence=dissatisfying"),
    ] = None,
    sheet: Annotated[str | None, typer.Option(help="xlsx: the sheet (default: the first)")] = None,
    dry: Annotated[
        bool, typer.Option("--dry-run", help="Check everything, store nothing: preview and errors")
    ] = False,
) -> None:
    """Import stories; `codes` given per row count as confirmed codings. Stories without a
    clear valence are stored as neutral/unknown for researchers to code or exclude."""
    settings, factory = ready()
    try:
        options = ImportOptions(
            parse_pairs(map_ or [], "--map"), parse_pairs(default or [], "--default"), sheet
        )
        if dry:
            report = dry_run(factory, file, survey, settings, options)
            assert report.table is not None
            typer.echo(f"read as: {json.dumps(report.table.details(), ensure_ascii=False)}")
            for row in report.preview:
                typer.echo(json.dumps(row, ensure_ascii=False, default=str))
            typer.echo(
                f"{report.rows_read} records read, {report.rows_read - report.error_count} "
                f"would be imported, {report.error_count} with errors (dry run: nothing stored)"
            )
            _errors(report)
            raise typer.Exit(1 if report.error_count else 0)
        try:
            total = count_records(open_table(file, sheet=sheet))
        except FileUnreadable as exc:
            raise ImportFailed(str(exc)) from exc
        with tqdm(total=total, unit="row", file=sys.stderr) as bar:
            report = import_file(
                factory,
                file,
                survey,
                settings,
                options,
                imported_by=f"cli:{file.name}",
                progress=bar.update,
            )
    except ImportFailed as exc:
        fail(str(exc))
        return
    typer.echo(
        f"{report.stored} stories imported ({report.coded} with confirmed codes), "
        f"{report.duplicates} already there, {report.error_count} records with errors "
        f"(import {report.import_id})"
    )
    _errors(report)
    if report.error_count:
        raise typer.Exit(1)
