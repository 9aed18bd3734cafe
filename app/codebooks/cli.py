"""`cit codebook`: import codebook files as new codebooks or versions, and export them again.

app/cli.py registers `codebook_cli`. The work itself is in functions that take a session factory,
so that it runs against any database; the commands only add settings and the migration check."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import yaml
from sqlalchemy.orm import Session, sessionmaker

from app.cli_support import ready
from app.codebooks import service
from app.codebooks.service import CodebookInvalid
from app.db import session_scope
from app.errors import AppError

codebook_cli = typer.Typer(help="Codebooks: import and export YAML files.", no_args_is_help=True)


class CliError(Exception):
    """A failure to report on stderr (one line, then optional detail lines) with exit code 1."""

    def __init__(self, message: str, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text("utf-8"))
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise CliError(f"{path} is not UTF-8 text") from exc
    except yaml.YAMLError as exc:
        raise CliError(f"{path} is not valid YAML: {exc}") from exc


def _invalid(path: Path, exc: CodebookInvalid) -> CliError:
    count = len(exc.errors)
    return CliError(
        f"{path} is not a valid codebook ({count} problem{'s' if count != 1 else ''}); "
        "nothing was saved:",
        [f"{e['path'] or '(codebook)'}: {e['message']}" for e in exc.errors],
    )


def import_codebook_file(
    factory: sessionmaker[Session], path: Path, note: str = ""
) -> tuple[str, int, str]:
    """Create the codebook, or add a version to the one with the same key.

    Returns (key, version number, "created" | "new version" | "unchanged")."""
    data = _read_yaml(path)
    try:
        parsed = service.parse_content(data)
        with session_scope(factory) as session:
            existing = service.find_codebook(session, parsed.key)
            if existing is None:
                version = service.create_codebook(session, data, None, note)
                return parsed.key, version.number, "created"
            before = existing.current_version
            version = service.update_codebook(session, existing, data, None, note)
            outcome = "unchanged" if version.number == before else "new version"
            return parsed.key, version.number, outcome
    except CodebookInvalid as exc:
        raise _invalid(path, exc) from exc
    except AppError as exc:
        raise CliError(exc.detail) from exc


def export_codebook_file(
    factory: sessionmaker[Session], key: str, path: Path, version: int | None = None
) -> int:
    """Write a version (default: the current one) of the codebook KEY as YAML; its number."""
    with session_scope(factory, write=False) as session:
        codebook = service.find_codebook(session, key)
        if codebook is None:
            raise CliError(f"no codebook with the key {key!r}")
        try:
            row = service.get_version(session, codebook.id, version or codebook.current_version)
        except AppError as exc:
            raise CliError(exc.detail) from exc
        text = service.export_yaml(row)
        number = row.number
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}") from exc
    return number


def _factory() -> sessionmaker[Session]:
    _settings, factory = ready()
    return factory


def _fail(error: CliError) -> NoReturn:
    typer.echo(f"error: {error.message}", err=True)
    for line in error.details:
        typer.echo(f"  - {line}", err=True)
    raise typer.Exit(1)


@codebook_cli.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(help="Codebook file (YAML), see codebooks/")],
    note: Annotated[str, typer.Option(help="Change note stored with the version")] = "",
) -> None:
    """Import a codebook file: a new codebook, or a new version of the one with the same key."""
    try:
        key, number, outcome = import_codebook_file(_factory(), file, note)
    except CliError as exc:
        _fail(exc)
    typer.echo(f"codebook {key}: version {number} ({outcome})")


@codebook_cli.command("export")
def export_command(
    key: Annotated[str, typer.Argument(help="The codebook's key")],
    file: Annotated[Path, typer.Argument(help="Where to write the YAML file")],
    version: Annotated[
        int | None, typer.Option(min=1, help="Version number (default: the current one)")
    ] = None,
) -> None:
    """Write a codebook version to a YAML file."""
    try:
        number = export_codebook_file(_factory(), key, file, version)
    except CliError as exc:
        _fail(exc)
    typer.echo(f"codebook {key}: version {number} written to {file}")


@codebook_cli.command("list")
def list_command() -> None:
    """List the codebooks with their current version and number of active codes."""
    with session_scope(_factory(), write=False) as session:
        rows = service.summaries(session)
    if not rows:
        typer.echo("no codebooks yet; import one with: cit codebook import FILE.yaml")
    for row in rows:
        typer.echo(f"{row.key}  v{row.current_version}  {row.n_codes} codes  {row.name}")
