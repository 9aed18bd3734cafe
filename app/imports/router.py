"""Import API: upload a file into a survey (a queued job with progress), or check it first."""

from __future__ import annotations

import secrets
import shutil
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from pydantic import BaseModel, Field

from app.auth import RequireAdmin
from app.config import app_settings
from app.db import SessionDep
from app.errors import Forbidden, Invalid, NotFound, problem_responses
from app.imports.files import FORMATS
from app.imports.service import (
    ImportFailed,
    ImportOptions,
    check_options,
    create_run,
    dry_run,
    parse_pairs,
)
from app.jobs.queue import enqueue
from app.models import ImportRun
from app.suggestions.queue import IMPORT
from app.surveys.service import get_survey

router = APIRouter(prefix="/api/v1", tags=["imports"], responses=problem_responses(Forbidden))


class ImportErrorRead(BaseModel):
    line: int = Field(description="The record's first line (a CSV record may span several)")
    column: str | None
    value: str | None
    message: str


class ImportRead(BaseModel):
    id: int
    survey_id: int
    file_name: str
    file_format: str
    details: dict[str, Any] = Field(description="Encoding, delimiter or sheet found; columns")
    options: dict[str, Any]
    imported_by: str
    status: Literal["queued", "running", "done", "failed"]
    job_id: int | None
    rows_total: int | None
    rows_read: int
    progress: float | None = Field(description="rows_read / rows_total, when the total is known")
    stored: int
    duplicates: int
    coded: int
    error_count: int
    errors: list[ImportErrorRead] = Field(description="The first 1000 errors")
    failure: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class DryRunRead(BaseModel):
    dry_run: Literal[True] = True
    details: dict[str, Any]
    rows_read: int
    would_import: int
    error_count: int
    errors: list[ImportErrorRead]
    preview: list[dict[str, Any]] = Field(description="The first rows as they would be stored")


def to_read(run: ImportRun) -> ImportRead:
    progress = None
    if run.rows_total:
        progress = min(run.rows_read / run.rows_total, 1.0)
    elif run.status == "done":
        progress = 1.0
    return ImportRead(
        id=run.id,
        survey_id=run.survey_id,
        file_name=run.file_name,
        file_format=run.file_format,
        details=run.details,
        options=run.options,
        imported_by=run.imported_by,
        status=run.status,  # type: ignore[arg-type]
        job_id=run.job_id,
        rows_total=run.rows_total,
        rows_read=run.rows_read,
        progress=progress,
        stored=run.stored,
        duplicates=run.duplicates,
        coded=run.coded,
        error_count=run.error_count,
        errors=[ImportErrorRead(**e) for e in run.errors],
        failure=run.failure,
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
    )


def _save_upload(upload: UploadFile, directory: Path) -> tuple[Path, str]:
    name = Path(upload.filename or "upload").name
    suffix = Path(name).suffix.lower()
    if suffix not in FORMATS:
        raise Invalid(f"{name}: upload a .csv, .tsv, .jsonl (.ndjson) or .xlsx file")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{secrets.token_hex(8)}{suffix}"
    with path.open("wb") as sink:
        shutil.copyfileobj(upload.file, sink, length=1 << 20)
    return path, name


@router.post(
    "/surveys/{survey_id:int}/imports",
    status_code=202,
    response_model=ImportRead | DryRunRead,
    responses={
        200: {"model": DryRunRead, "description": "dry_run: what would be imported"},
        **problem_responses(NotFound, Invalid),
    },
)
def upload_import(
    survey_id: int,
    request: Request,
    response: Response,
    session: SessionDep,
    user: RequireAdmin,
    file: Annotated[UploadFile, File(description=".csv/.tsv, .jsonl or .xlsx")],
    map: Annotated[
        list[str] | None, Form(description="'SOURCE COLUMN=field', repeat for several")
    ] = None,
    default: Annotated[
        list[str] | None, Form(description="'field=value' for empty cells, e.g. valence=unknown")
    ] = None,
    sheet: Annotated[str | None, Form()] = None,
    dry_run_only: Annotated[
        bool, Form(alias="dry_run", description="Check only: preview and every error")
    ] = False,
) -> ImportRead | DryRunRead:
    """Upload stories. The import runs as a job in the queue: poll `GET /api/v1/imports/{id}`
    for its progress and errors (first line of the record, column, value). With `dry_run`
    nothing is stored and the answer shows the first rows as they would be stored."""
    get_survey(session, survey_id)
    settings = app_settings(request)
    try:
        options = ImportOptions(
            parse_pairs(map or [], "map"), parse_pairs(default or [], "default"), sheet
        )
        check_options(options)
    except ImportFailed as exc:
        raise Invalid(str(exc)) from exc
    path, name = _save_upload(file, settings.data_dir / "imports")
    if dry_run_only:
        try:
            report = dry_run(request.app.state.sessionmaker, path, survey_id, settings, options)
        except ImportFailed as exc:
            raise Invalid(str(exc)) from exc
        finally:
            path.unlink(missing_ok=True)
        assert report.table is not None
        response.status_code = 200
        return DryRunRead(
            details=report.table.details(),
            rows_read=report.rows_read,
            would_import=report.rows_read - report.error_count,
            error_count=report.error_count,
            errors=[ImportErrorRead(**e.as_dict()) for e in report.errors],
            preview=report.preview,
        )
    run = create_run(session, survey_id, name, FORMATS[path.suffix], options, user.name)
    run.job_id = enqueue(
        session,
        IMPORT,
        {
            "import_id": run.id,
            "path": str(path),
            "survey_id": survey_id,
            "options": options.as_dict(),
            "imported_by": user.name,
            "file_name": name,
        },
        subject=f"import:{run.id}",
        max_attempts=2,
    )
    session.flush()
    response.headers["Location"] = f"/api/v1/imports/{run.id}"
    return to_read(run)


@router.get(
    "/imports/{import_id:int}", response_model=ImportRead, responses=problem_responses(NotFound)
)
def read_import(import_id: int, session: SessionDep, _user: RequireAdmin) -> ImportRead:
    run = session.get(ImportRun, import_id)
    if run is None:
        raise NotFound(f"import {import_id} does not exist")
    return to_read(run)


@router.get(
    "/surveys/{survey_id:int}/imports",
    response_model=list[ImportRead],
    responses=problem_responses(NotFound),
)
def list_imports(survey_id: int, session: SessionDep, _user: RequireAdmin) -> list[ImportRead]:
    from sqlalchemy import select

    get_survey(session, survey_id)
    runs = session.scalars(
        select(ImportRun).where(ImportRun.survey_id == survey_id).order_by(ImportRun.id.desc())
    )
    return [to_read(r) for r in runs]
