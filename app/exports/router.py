"""Export API: a survey's stories with everything about them, streamed as CSV, JSONL or xlsx."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from app import negotiation
from app.auth import Principal, RequireResearcher
from app.config import app_settings
from app.db import SessionDep, session_scope
from app.errors import Forbidden, NotFound, problem_responses
from app.exports import stream
from app.exports.service import TABLES, ExportSpec, count_stories
from app.incidents.redaction import required_redaction
from app.incidents.service import IncidentFilters, StatusFilter, resolve_view
from app.params import IsoDateTime
from app.surveys.service import get_survey

router = APIRouter(prefix="/api/v1/surveys", tags=["exports"])

Table = Literal["stories", "codings", "suggestions", "adjudications"]
EXPORT_FORMATS = ("csv", "jsonl", "xlsx", "qdpx")
RESPONSES = {
    **problem_responses(NotFound, Forbidden, negotiation.NotAcceptable, negotiation.UnknownFormat),
    200: {
        "description": "The export, streamed",
        "content": {negotiation.MEDIA_TYPES[f]: {} for f in (*EXPORT_FORMATS, "zip")},
    },
}


def streamed(
    request: Request,
    user: Principal,
    spec: ExportSpec,
    fmt: str,
    table: str | None,
    *,
    stem: str,
    survey_id: int | None,
) -> StreamingResponse:
    """Count and audit in a writing transaction of its own (a GET's session only reads; on
    SQLite a read that turns into a write can fail under load), then stream from a snapshot."""
    with session_scope(request.app.state.sessionmaker) as writer:
        count = count_stories(writer, spec)
        stream.record(writer, user, spec, fmt, stories=count, table=table, survey_id=survey_id)
    return StreamingResponse(
        stream.chunks(request.app.state.sessionmaker, spec, fmt, table),
        media_type=stream.media_type(fmt, table),
        headers={
            "Content-Disposition": f'attachment; filename="{stream.file_name(stem, fmt, table)}"',
            "X-Total-Count": str(count),
            "Cache-Control": "no-store",
        },
    )


@router.get("/{survey_id:int}/export", responses=RESPONSES, response_model=None)
def export_survey(
    survey_id: int,
    request: Request,
    session: SessionDep,
    user: RequireResearcher,
    format: Annotated[
        Literal["csv", "jsonl", "xlsx", "qdpx"] | None,
        Query(description="csv (a zip of tables, or one table with `table`), jsonl, xlsx, qdpx"),
    ] = None,
    table: Annotated[Table | None, Query(description="csv/xlsx: only this table")] = None,
    view: Annotated[
        Literal["original", "redacted"] | None,
        Query(description="original (admins only; their default) or redacted"),
    ] = None,
    status: StatusFilter | None = None,
    submitted_from: IsoDateTime | None = None,
    submitted_to: IsoDateTime | None = None,
) -> StreamingResponse:
    """Every story of the survey, one row each: answers (redacted unless admin), valence,
    touchpoint, channel, dates, attributes, source, consent, status, final codes with their
    codebook version; and as separate tables (CSV: files in a zip; xlsx: sheets; JSONL:
    nested) every coding the caller may see (blind coding holds), the suggestions and the
    adjudications. `qdpx` is the REFI-QDA project for QDA programs. Each export is audited."""
    survey = get_survey(session, survey_id)
    fmt = negotiation.negotiate(request, format, EXPORT_FORMATS)
    spec = ExportSpec(
        filters=IncidentFilters(
            survey_id=survey.id,
            status=status,
            submitted_from=submitted_from,
            submitted_to=submitted_to,
        ),
        view=resolve_view(user, view),
        viewer=user,
        redaction=required_redaction(app_settings(request).nlp_pipeline),
    )
    if fmt == "qdpx":
        from app.refi.router import project_response

        return project_response(request, session, user, spec, survey)
    return streamed(
        request, user, spec, fmt, table, stem=f"survey-{survey.id}", survey_id=survey.id
    )


__all__ = ["TABLES", "router", "streamed"]
