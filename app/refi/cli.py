"""`cit refi ...`: REFI-QDA codebooks (.qdc) and projects (.qdpx) from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.cli_support import fail, ready
from app.codebooks import service as codebooks
from app.codebooks.service import CodebookInvalid
from app.db import session_scope
from app.errors import AppError
from app.refi.codebook import export_qdc, import_qdc
from app.refi.project import import_qdpx

refi_cli = typer.Typer(
    help="REFI-QDA exchange with QDA programs (QualCoder, MAXQDA, ATLAS.ti, NVivo).",
    no_args_is_help=True,
)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
        raise


@refi_cli.command("export-qdc")
def export_qdc_command(
    key: Annotated[str, typer.Argument(help="The codebook's key")],
    file: Annotated[Path, typer.Argument(help="Where to write the .qdc")],
    version: Annotated[int | None, typer.Option(min=1)] = None,
) -> None:
    """Write a codebook version as a REFI-QDA codebook."""
    _settings, factory = ready()
    with session_scope(factory, write=False) as session:
        codebook = codebooks.find_codebook(session, key)
        if codebook is None:
            fail(f"no codebook with the key {key!r}")
        assert codebook is not None
        data = export_qdc(
            codebooks.get_version(session, codebook.id, version or codebook.current_version)
        )
    file.write_bytes(data)
    typer.echo(f"codebook {key} written to {file}")


@refi_cli.command("import-qdc")
def import_qdc_command(
    file: Annotated[Path, typer.Argument(help="A .qdc file from a QDA program")],
    key: Annotated[
        str | None, typer.Option(help="Merge into this codebook (a new version)")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Name of a new codebook")] = None,
    note: Annotated[str, typer.Option(help="Change note")] = "",
) -> None:
    """Import a REFI-QDA codebook as a new codebook or a new version of KEY."""
    _settings, factory = ready()
    try:
        with session_scope(factory) as session:
            result = import_qdc(
                session, _read(file), key=key, name=name or file.stem, actor=None, note=note
            )
    except CodebookInvalid as exc:
        fail(exc.detail)
        return
    except AppError as exc:
        fail(exc.detail)
        return
    extra = f"; {result.sets_ignored} code sets ignored" if result.sets_ignored else ""
    typer.echo(
        f"codebook {result.key}: version {result.version} ({result.outcome}), "
        f"{result.codes} codes{extra}"
    )


@refi_cli.command("import-qdpx")
def import_qdpx_command(
    file: Annotated[Path, typer.Argument(help="A .qdpx project from a QDA program")],
    survey: Annotated[int, typer.Option(help="Survey the stories go into")],
) -> None:
    """Import stories, codes and codings of a REFI-QDA project (all or nothing)."""
    _settings, factory = ready()
    try:
        with session_scope(factory) as session:
            result = import_qdpx(session, _read(file), survey, file_name=file.name, actor=None)
    except AppError as exc:
        fail(exc.detail)
        return
    typer.echo(
        f"{result.stories} stories, {result.codings} codings, {result.final_codes} final codes "
        f"imported; {result.duplicates} already there, "
        f"{result.skipped_sources} sources without text"
    )
