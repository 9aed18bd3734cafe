"""Reading stories (researchers, admins) and the JSON submission endpoint (respondents)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Request, Response

from app import negotiation
from app.auth import Principal, RequireResearcher
from app.config import app_settings
from app.db import DbGate, SessionDep
from app.errors import (
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    NotFound,
    ServiceUnavailable,
    TooManyRequests,
    problem_responses,
)
from app.exports.router import streamed
from app.exports.service import ExportSpec
from app.incidents import service
from app.incidents.intake import receive_story
from app.incidents.redaction import required_redaction
from app.incidents.schemas import IncidentPage, IncidentRead, StorySubmission, SubmissionReceipt
from app.pagination import PageSize
from app.params import IsoDateTime
from app.protection import client_key

router = APIRouter(
    prefix="/api/v1/incidents", tags=["incidents"], responses=problem_responses(Forbidden)
)
public_router = APIRouter(prefix="/api/v1/public/surveys", tags=["public"])


ViewParam = Annotated[
    Literal["original", "redacted"] | None,
    Query(description="original (admins only; their default) or redacted"),
]


def _view(user: Principal, asked: service.View | None) -> service.View:
    return service.resolve_view(user, asked)


def _redaction(request: Request) -> str | None:
    """The redaction researchers' reads require under this app's settings."""
    return required_redaction(app_settings(request).nlp_pipeline)


@router.get(
    "",
    response_model=IncidentPage,
    responses={
        **problem_responses(Invalid, negotiation.NotAcceptable, negotiation.UnknownFormat),
        200: {
            "content": {
                "text/csv": {},
                "application/x-ndjson": {},
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {},
            }
        },
    },
)
def list_incidents(
    request: Request,
    session: SessionDep,
    size: PageSize,
    user: RequireResearcher,
    survey_id: int | None = None,
    status: service.StatusFilter | None = None,
    code: Annotated[str | None, Query(description="Stories with this final code")] = None,
    valence: Literal["satisfying", "dissatisfying", "neutral", "unknown"] | None = None,
    touchpoint: str | None = None,
    channel: str | None = None,
    submitted_from: Annotated[
        IsoDateTime | None, Query(description="Submitted at or after (UTC unless a zone is given)")
    ] = None,
    submitted_to: Annotated[IsoDateTime | None, Query(description="Submitted before")] = None,
    q: Annotated[
        str | None,
        Query(
            max_length=200,
            # A NUL cannot be stored, so cannot be found either (SQLite would match every story).
            pattern=r"^[^\x00]*$",
            description="Case-insensitive text search over the answers the caller reads "
            "(researchers: the redacted text)",
        ),
    ] = None,
    cursor: str | None = None,
    view: ViewParam = None,
    format: Annotated[
        Literal["json", "csv", "jsonl", "xlsx"] | None,
        Query(description="json (pages); csv, jsonl or xlsx: every matching story, streamed"),
    ] = None,
) -> IncidentPage | Response:
    """Stories, oldest id first (keyset pages), with suggestions, final codes and the codings
    the caller may see; or all of them as a file (`format`, or `Accept: text/csv`)."""
    filters = service.IncidentFilters(
        survey_id=survey_id,
        status=status,
        code=code,
        valence=valence,
        touchpoint=touchpoint,
        channel=channel,
        submitted_from=submitted_from,
        submitted_to=submitted_to,
        q=q,
    )
    chosen = negotiation.negotiate(request, format, ("json", "csv", "jsonl", "xlsx"))
    if chosen != "json":
        spec = ExportSpec(
            filters=filters, view=_view(user, view), viewer=user, redaction=_redaction(request)
        )
        table = "stories" if chosen == "csv" else None
        return streamed(request, user, spec, chosen, table, stem="incidents", survey_id=None)
    return service.list_incidents(
        session,
        filters=filters,
        cursor=cursor,
        limit=size,
        view=_view(user, view),
        viewer=user,
        redaction=_redaction(request),
    )


@router.get(
    "/{incident_id:int}",
    response_model=IncidentRead,
    responses=problem_responses(NotFound, Forbidden),
)
def read_incident(
    incident_id: int,
    request: Request,
    response: Response,
    session: SessionDep,
    user: RequireResearcher,
    view: ViewParam = None,
) -> IncidentRead:
    """A story with its suggestions (scores, sources, evidence spans, codebook and model
    versions), final codes and the codings the caller may see. The `ETag` header carries the
    story's version: send it back as `If-Match` when coding it."""
    incident = service.get_incident(session, incident_id)
    response.headers["ETag"] = service.etag(session, incident, user.id)
    return service.to_reads(
        session, [incident], _view(user, view), user, redaction=_redaction(request)
    )[0]


@public_router.post(
    "/{slug}/incidents",
    status_code=201,
    response_model=SubmissionReceipt,
    responses={
        200: {"model": SubmissionReceipt, "description": "Already received (same id)"},
        **problem_responses(NotFound, Gone, Conflict, TooManyRequests, ServiceUnavailable),
    },
)
async def submit_story(
    slug: str,
    data: StorySubmission,
    request: Request,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=64)] = None,
) -> SubmissionReceipt:
    """Submit a story as JSON (for custom front ends). Respondents get a receipt, never the
    story back: stories are readable only by researchers."""
    if not request.app.state.submit_limiter.allow(client_key(request)):
        raise TooManyRequests(
            "too many submissions from this client; wait a minute", headers={"Retry-After": "60"}
        )
    gate: DbGate = request.app.state.db_gate
    intake = await gate.run(
        receive_story,
        request.app.state.engine,
        app_settings(request),
        request.app.state.rules_cache,
        slug,
        data.model_dump(),
        data.consent,
        submission_key=data.submission_id or idempotency_key,
        invitation_token=data.invitation,
    )
    match intake.outcome:
        case "no_survey":
            raise NotFound(f"no open survey at {slug!r}")
        case "closed":
            raise Gone("this survey is closed and no longer accepts stories")
        case "invalid":
            raise service.SubmissionInvalid(intake.errors)
        case "invitation_invalid":
            raise NotFound("this invitation is not valid for this survey")
        case "invitation_used":
            raise Conflict("this invitation has been used already")
        case "invitation_expired":
            raise Gone("this invitation has expired")
    assert intake.submitted_at is not None
    if intake.outcome == "duplicate":
        response.status_code = 200
        return SubmissionReceipt(
            status="already_received",
            submitted_at=intake.submitted_at,
            receipt_code=intake.receipt,
        )
    return SubmissionReceipt(
        status="received", submitted_at=intake.submitted_at, receipt_code=intake.receipt
    )
