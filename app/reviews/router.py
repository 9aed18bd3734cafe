"""Review workflow API: the queue, codings (blind double coding), adjudication, assignments,
progress, the agreement report and the audit trail."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import BaseModel
from sqlalchemy.orm import Session

from app import negotiation
from app.auth import (
    RESEARCHERS,
    CredentialsDep,
    Principal,
    RequireAdmin,
    RequireAnyRole,
    RequireResearcher,
    one_hop,
)
from app.db import SessionDep
from app.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    PreconditionFailed,
    problem_responses,
)
from app.exports.report_tables import agreement_csv
from app.incidents.schemas import IncidentPage, IncidentRead
from app.incidents.service import View, etag, etag_for, get_incident, resolve_view, to_reads
from app.pagination import PageSize
from app.params import IsoDateTime
from app.reviews import bootstrap, notifications, queue, service, trail
from app.reviews.errors import CodesInvalid, PreconditionRequired, SpansInvalid
from app.reviews.reliability import reliability_report
from app.reviews.schemas import (
    AdjudicationUpdate,
    AgreementReportRead,
    AssignmentCreate,
    AssignmentResult,
    AuditPage,
    CodingUpdate,
    DoubleCodingChoice,
    DoubleCodingResult,
    LeaseRead,
    MyCoding,
    NextRequest,
    NotificationRead,
    Progress,
    ReviewItem,
    SurveyQueueCounts,
)

router = APIRouter(tags=["review"], responses=problem_responses(Forbidden))
reports_router = APIRouter(prefix="/api/v1/reports", tags=["reports"])
audit_router = APIRouter(
    prefix="/api/v1/audit", tags=["audit"], responses=problem_responses(Forbidden)
)

IfMatch = Annotated[
    str | None,
    Header(description='The ETag of the story as read (`"<version>"`); required'),
]
ViewParam = Annotated[
    View | None, Query(description="original (admins only; their default) or redacted")
]


def _json(model: BaseModel, tag: str) -> Response:
    """The coding path's answers, serialized here, in the endpoint's thread: FastAPI would
    validate the model again (on one more worker-thread hop) before serializing it the same
    way (`response_model` still documents it)."""
    return Response(
        model.model_dump_json(by_alias=True), media_type="application/json", headers={"ETag": tag}
    )


# The queue ---------------------------------------------------------------------------------------


@router.post(
    "/api/v1/review/next",
    response_model=ReviewItem,
    responses={204: {"description": "Nothing left to code"}, **problem_responses(NotFound)},
)
async def review_next(
    request: Request,
    presented: CredentialsDep,
    body: NextRequest | None = None,
    view: ViewParam = None,
) -> Response:
    """Hand the caller the next story to code, held for them for `LEASE_MINUTES` (30): one
    they hold already, else one assigned to them, else by the survey's review order. Never a
    story they coded, nor a single-coded story someone else holds."""

    def work(session: Session, user: Principal) -> Response:
        chosen = resolve_view(user, view)
        handed = queue.next_story(session, user, survey_id=body.survey_id if body else None)
        if handed is None:
            return Response(status_code=204)
        incident, lease, nothing_of, suggestions = handed
        revisions: dict[int, int] = {}
        item = ReviewItem(
            incident=to_reads(
                session,
                [incident],
                chosen,
                user,
                revisions=revisions,
                nothing_of=nothing_of,
                suggestions_read=suggestions,
            )[0],
            lease_expires_at=lease.expires_at,
        )
        # The ETag from the codings just read (`etag` would read the revision again).
        return _json(item, etag_for(incident, revisions.get(incident.id)))

    # The coding path: the check of the caller, the work and the commit in one thread hop.
    return await one_hop(request, presented, RESEARCHERS, work)


@router.delete(
    "/api/v1/review/leases/{incident_id:int}",
    status_code=204,
    responses=problem_responses(NotFound),
)
def release_lease(
    incident_id: int,
    session: SessionDep,
    user: RequireResearcher,
    researcher: Annotated[
        str | None,
        Query(
            description="Admins: break this researcher's lease (default for admins: every "
            "lease on the story)"
        ),
    ] = None,
) -> Response:
    """Give a story the caller holds back to the queue; admins break another's lease."""
    if researcher is None and user.role != "admin":
        queue.release(session, user, incident_id)
    else:
        service.break_lease(session, incident_id, researcher, user)
    return Response(status_code=204)


@router.get("/api/v1/review/leases", response_model=list[LeaseRead])
def list_leases(
    session: SessionDep, _user: RequireAdmin, survey_id: int | None = None
) -> list[LeaseRead]:
    """Live leases: who holds which story, until when."""
    return queue.list_leases(session, survey_id)


@router.get(
    "/api/v1/review/surveys",
    response_model=list[SurveyQueueCounts],
    responses=problem_responses(NotFound),
)
def review_surveys(
    session: SessionDep, _user: RequireResearcher, survey_id: int | None = None
) -> list[SurveyQueueCounts]:
    """Per survey: stories by status, double-coded, waiting for codings, held, waiting for a
    decision on a proposed code."""
    return queue.survey_counts(session, survey_id)


@router.post(
    "/api/v1/review/double-coding",
    response_model=DoubleCodingResult,
    responses=problem_responses(NotFound),
)
def choose_double_coding(
    data: DoubleCodingChoice, session: SessionDep, user: RequireAdmin
) -> DoubleCodingResult:
    """Choose the stories that are coded blind by two researchers (`coders_required: 2`), or
    single-coded (1), by id or by a survey filter; the survey's share decides for the rest."""
    return queue.choose_double_coding(session, data, user)


@router.get("/api/v1/review/notifications", response_model=list[NotificationRead])
def list_notifications(session: SessionDep, user: RequireResearcher) -> list[NotificationRead]:
    """The caller's notifications, newest first (the last 100)."""
    return notifications.list_all(session, user)


@router.post(
    "/api/v1/review/notifications/{notification_id:int}/read",
    response_model=NotificationRead,
    responses=problem_responses(NotFound),
)
def read_notification(
    notification_id: int, session: SessionDep, user: RequireResearcher
) -> NotificationRead:
    """Mark a notification read."""
    return notifications.mark_read(session, user, notification_id)


@router.post(
    "/api/v1/review/assignments",
    status_code=201,
    response_model=AssignmentResult,
    responses=problem_responses(NotFound, Invalid, Conflict),
)
def create_assignments(
    data: AssignmentCreate, session: SessionDep, user: RequireAdmin
) -> AssignmentResult:
    """Assign stories to a researcher (their queue serves them first): `incident_ids`, or the
    `count` oldest open, unassigned stories of `survey_id`."""
    return queue.assign(session, data, user)


@router.get(
    "/api/v1/review/progress",
    response_model=Progress,
    responses=problem_responses(NotFound, Invalid),
)
def review_progress(
    session: SessionDep,
    user: RequireResearcher,
    researcher: Annotated[str | None, Query(description="Admins: another researcher")] = None,
    survey_id: Annotated[int | None, Query(description="Only this survey's stories")] = None,
) -> Progress:
    """Coded, left in the queue, assigned and not coded (in total and per survey), agreement
    with the other coder, stories to code again, and unread notifications."""
    if researcher is not None and researcher != user.name and user.role != "admin":
        raise Forbidden("only admins see another researcher's progress")
    return queue.progress(session, researcher or user.name, survey_id=survey_id)


@router.get(
    "/api/v1/review/adjudication",
    response_model=IncidentPage,
    responses=problem_responses(Invalid),
)
def adjudication_queue(
    request: Request,
    session: SessionDep,
    size: PageSize,
    user: RequireAdmin,
    survey_id: int | None = None,
    cursor: str | None = None,
) -> IncidentPage:
    """Stories whose coders disagree, with every coding."""
    return service.adjudication_queue(
        session,
        survey_id=survey_id,
        cursor=cursor,
        limit=size,
        user=user,
    )


# Codings -----------------------------------------------------------------------------------------


@router.get(
    "/api/v1/incidents/{incident_id:int}/codings/me",
    response_model=MyCoding,
    responses=problem_responses(NotFound),
)
def read_my_coding(
    incident_id: int,
    response: Response,
    session: SessionDep,
    user: RequireResearcher,
    view: ViewParam = None,
) -> MyCoding:
    coding, _incident = service.my_coding(session, incident_id, user, view)
    response.headers["ETag"] = coding.etag
    return coding


@router.put(
    "/api/v1/incidents/{incident_id:int}/codings/me",
    response_model=MyCoding,
    responses=problem_responses(
        NotFound, Conflict, PreconditionFailed, PreconditionRequired, CodesInvalid, SpansInvalid
    ),
)
async def write_my_coding(
    incident_id: int,
    data: CodingUpdate,
    request: Request,
    presented: CredentialsDep,
    if_match: IfMatch = None,
    view: ViewParam = None,
) -> Response:
    """Code a story (or exclude it with a reason), or revise one's coding. Needs `If-Match`
    with the story's ETag; answers with the new ETag. Once every required coding is in, the
    story is final when the coders agree, else it goes to adjudication.

    `codes[].spans` marks the passages that justify a code: `{field, start, end}` with
    character offsets into the answer as the caller reads it (researchers: the redacted text;
    admins: the original, or the redacted with `?view=redacted`). They are checked against
    that text and read back with the quoted passage."""

    def work(session: Session, user: Principal) -> Response:
        coding = service.save_coding(session, incident_id, data, user, if_match, view)
        return _json(coding, coding.etag)

    return await one_hop(request, presented, RESEARCHERS, work)


@router.put(
    "/api/v1/incidents/{incident_id:int}/adjudication",
    response_model=IncidentRead,
    responses=problem_responses(
        NotFound, Conflict, PreconditionFailed, PreconditionRequired, CodesInvalid
    ),
)
def adjudicate(
    incident_id: int,
    data: AdjudicationUpdate,
    response: Response,
    session: SessionDep,
    user: RequireAdmin,
    if_match: IfMatch = None,
) -> IncidentRead:
    """Set the final codes (source "adjudication") or exclude the story. Needs `If-Match`."""
    read = service.adjudicate(session, incident_id, data, user, if_match, "original")
    response.headers["ETag"] = etag(session, get_incident(session, incident_id), user.id)
    return read


# Audit trail -------------------------------------------------------------------------------------


@router.get(
    "/api/v1/incidents/{incident_id:int}/audit",
    response_model=AuditPage,
    responses=problem_responses(NotFound, Invalid),
)
def incident_audit(
    incident_id: int,
    request: Request,
    session: SessionDep,
    size: PageSize,
    user: RequireAdmin,
    cursor: str | None = None,
) -> AuditPage:
    """Every recorded change of a story: codings, status changes, adjudication."""
    get_incident(session, incident_id)
    return trail.list_events(
        session,
        trail.AuditFilters(entity_type="incident", entity_id=str(incident_id)),
        cursor=cursor,
        limit=size,
    )


@audit_router.get("", response_model=AuditPage, responses=problem_responses(Invalid))
def list_audit_events(
    request: Request,
    session: SessionDep,
    size: PageSize,
    user: RequireAdmin,
    entity_type: str | None = None,
    entity_id: str | None = None,
    actor: Annotated[str | None, Query(description="Name of the person (or cli)")] = None,
    action: Annotated[str | None, Query(description='e.g. "coding.create"')] = None,
    at_from: Annotated[
        IsoDateTime | None, Query(description="At or after (UTC by default)")
    ] = None,
    at_to: Annotated[IsoDateTime | None, Query(description="Before")] = None,
    cursor: str | None = None,
) -> AuditPage:
    """The append-only audit trail, newest first. No endpoint changes or deletes it."""
    filters = trail.AuditFilters(
        entity_type=entity_type,
        entity_id=entity_id,
        actor=actor,
        action=action,
        at_from=at_from,
        at_to=at_to,
    )
    return trail.list_events(session, filters, cursor=cursor, limit=size)


# Agreement ---------------------------------------------------------------------------------------


@reports_router.get(
    "/agreement",
    response_model=AgreementReportRead,
    responses={
        **problem_responses(Invalid, negotiation.NotAcceptable, negotiation.UnknownFormat),
        200: {"content": {"text/csv": {}}},
    },
)
def agreement(
    request: Request,
    session: SessionDep,
    user: RequireAnyRole,
    survey_id: int | None = None,
    codebook_version: Annotated[
        int | None, Query(description="Id of a codebook version: only codings made under it")
    ] = None,
    codebook_version_id: Annotated[
        int | None, Query(description="The same as codebook_version (either name)")
    ] = None,
    submitted_from: Annotated[
        IsoDateTime | None, Query(description="Stories submitted at or after (UTC by default)")
    ] = None,
    submitted_to: Annotated[IsoDateTime | None, Query(description="... and before")] = None,
    exclusion: Annotated[
        Literal["missing", "category"],
        Query(
            description="missing (default): a coder who excluded a story is left out of its "
            "per-code figures; category: an exclusion is one more code"
        ),
    ] = "missing",
    seed: Annotated[
        int, Query(ge=0, le=2**32 - 1, description="Seed of the bootstrap intervals")
    ] = bootstrap.DEFAULT_SEED,
    resamples: Annotated[
        int, Query(ge=100, le=10_000, description="Bootstrap resamples of the stories")
    ] = bootstrap.DEFAULT_RESAMPLES,
    format: Annotated[
        Literal["json", "csv"] | None,
        Query(description="json, or csv: one row per section, code and statistic"),
    ] = None,
) -> dict[str, object] | Response:
    """Inter-coder agreement (percent agreement, Cohen's kappa per pair of coders, Fleiss'
    kappa, Krippendorff's alpha, Perreault & Leigh's Ir) per code and overall, over the
    stories two or more researchers coded; and the model's suggestions against the final
    codes. Aggregates only: viewers may read it."""
    if None not in (codebook_version, codebook_version_id) and (
        codebook_version != codebook_version_id
    ):
        raise Invalid("codebook_version and codebook_version_id name different versions")
    chosen = negotiation.negotiate(request, format, ("json", "csv"))
    report = reliability_report(
        session,
        survey_id=survey_id,
        codebook_version_id=codebook_version
        if codebook_version is not None
        else codebook_version_id,
        submitted_from=submitted_from,
        submitted_to=submitted_to,
        exclusion=exclusion,
        seed=seed,
        resamples=resamples,
    )
    if chosen == "csv":
        return Response(
            agreement_csv(report),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'inline; filename="cit-agreement.csv"'},
        )
    return report
