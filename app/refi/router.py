"""REFI-QDA API: codebooks as `.qdc` (export, import), projects as `.qdpx` (export, import)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel

from app.auth import Principal, RequireAdmin, RequireResearcher
from app.codebooks import service as codebooks
from app.codebooks.service import CodebookInvalid
from app.db import SessionDep, session_scope
from app.errors import Conflict, Forbidden, Invalid, NotFound, problem_responses
from app.exports import stream
from app.exports.service import ExportSpec, count_stories
from app.models import Survey
from app.refi.codebook import export_qdc, import_qdc
from app.refi.project import import_qdpx, project_chunks
from app.refi.xml import RefiInvalid
from app.surveys.service import get_survey

router = APIRouter(prefix="/api/v1", tags=["refi-qda"], responses=problem_responses(Forbidden))
QDC = "application/vnd.refi-qda.qdc+xml"
QDPX = "application/vnd.refi-qda.qdpx+zip"


class QdcImportRead(BaseModel):
    codebook_id: int
    key: str
    version: int
    outcome: str
    codes: int
    sets_ignored: int


class QdpxImportRead(BaseModel):
    import_id: int
    stories: int
    duplicates: int
    codings: int
    final_codes: int
    codebook_version: int | None
    skipped_sources: int


def project_response(
    request: Request, session: SessionDep, user: Principal, spec: ExportSpec, survey: Survey
) -> StreamingResponse:
    """The survey as a REFI-QDA project (the export endpoint's `format=qdpx`), audited."""
    with session_scope(request.app.state.sessionmaker) as writer:
        count = count_stories(writer, spec)
        stream.record(writer, user, spec, "qdpx", stories=count, survey_id=survey.id)
    return StreamingResponse(
        project_chunks(request.app.state.sessionmaker, spec, survey.id),
        media_type=QDPX,
        headers={
            "Content-Disposition": f'attachment; filename="survey-{survey.id}.qdpx"',
            "X-Total-Count": str(count),
            "Cache-Control": "no-store",
        },
    )


@router.get(
    "/codebooks/{codebook_id:int}/qdc",
    response_class=Response,
    responses={**problem_responses(NotFound), 200: {"content": {QDC: {}}}},
)
def export_codebook_qdc(
    codebook_id: int, session: SessionDep, _user: RequireResearcher, version: int | None = None
) -> Response:
    """The codebook as a REFI-QDA `.qdc` for QualCoder, MAXQDA, ATLAS.ti, NVivo."""
    codebook = codebooks.get_codebook(session, codebook_id)
    row = codebooks.get_version(session, codebook.id, version or codebook.current_version)
    return Response(
        export_qdc(row),
        media_type=QDC,
        headers={"Content-Disposition": f'attachment; filename="{codebook.key}-v{row.number}.qdc"'},
    )


async def _read(upload: UploadFile) -> bytes:
    return await upload.read()


@router.post(
    "/codebooks/qdc",
    response_model=QdcImportRead,
    status_code=201,
    responses=problem_responses(RefiInvalid, CodebookInvalid, Conflict, Invalid),
)
def import_codebook_qdc(
    session: SessionDep,
    user: RequireAdmin,
    file: Annotated[UploadFile, File(description="A .qdc file")],
    key: Annotated[
        str | None, Form(description="Merge into this codebook (a new version); else a new one")
    ] = None,
    name: Annotated[str | None, Form(description="Name of a new codebook")] = None,
    note: Annotated[str, Form()] = "",
) -> QdcImportRead:
    """Import a REFI-QDA codebook: merged into a new version of `key` (codes matched by GUID,
    name or key; indicators kept), or a new codebook. The usual validation applies."""
    data = file.file.read()
    result = import_qdc(
        session,
        data,
        key=key,
        name=name or (file.filename or "").rsplit(".", 1)[0] or None,
        actor=user,
        note=note,
    )
    return QdcImportRead(**vars(result))


@router.post(
    "/surveys/{survey_id:int}/qdpx",
    response_model=QdpxImportRead,
    status_code=201,
    responses=problem_responses(RefiInvalid, CodebookInvalid, NotFound),
)
def import_project(
    survey_id: int,
    session: SessionDep,
    user: RequireAdmin,
    file: Annotated[UploadFile, File(description="A .qdpx project")],
) -> QdpxImportRead:
    """Import stories, codes and codings from a REFI-QDA project made in another program, all
    or nothing; importing the same project again stores nothing twice."""
    get_survey(session, survey_id)
    result = import_qdpx(
        session, file.file.read(), survey_id, file_name=file.filename or "project.qdpx", actor=user
    )
    return QdpxImportRead(**vars(result))
