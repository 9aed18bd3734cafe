"""Survey JSON API for researchers and admins, and the public JSON endpoints for front ends."""

from __future__ import annotations

import csv
import io
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response

from app.auth import RequireAdmin, RequireResearcher
from app.config import app_settings
from app.db import SessionDep
from app.errors import Conflict, Forbidden, Gone, Invalid, NotFound, problem_responses
from app.pagination import PageSize
from app.surveys import service
from app.surveys.schemas import (
    InvitationBatchCreate,
    InvitationPage,
    InvitationRead,
    PublicSurvey,
    SurveyCreate,
    SurveyRead,
    SurveyUpdate,
)

router = APIRouter(
    prefix="/api/v1/surveys", tags=["surveys"], responses=problem_responses(Forbidden)
)
public_router = APIRouter(prefix="/api/v1/public/surveys", tags=["public"])


@router.post("", status_code=201, response_model=SurveyRead, responses=problem_responses(Conflict))
def create_survey(
    data: SurveyCreate, request: Request, session: SessionDep, user: RequireAdmin
) -> SurveyRead:
    survey = service.create_survey(session, data, user)
    return service.to_read(survey, app_settings(request))


@router.get("", response_model=list[SurveyRead])
def list_surveys(
    request: Request, session: SessionDep, _user: RequireResearcher
) -> list[SurveyRead]:
    return [service.to_read(s, app_settings(request)) for s in service.list_surveys(session)]


@router.get("/{survey_id:int}", response_model=SurveyRead, responses=problem_responses(NotFound))
def read_survey(
    survey_id: int, request: Request, session: SessionDep, _user: RequireResearcher
) -> SurveyRead:
    return service.to_read(service.get_survey(session, survey_id), app_settings(request))


def _forget_rules(request: Request, *slugs: str) -> None:
    """This process's story intake reads the changed survey afresh (others within
    RULES_TTL_SECONDS; opening and closing take effect everywhere at once)."""
    for slug in slugs:
        request.app.state.rules_cache.forget(slug)


@router.patch("/{survey_id:int}", response_model=SurveyRead, responses=problem_responses(NotFound))
def edit_survey(
    survey_id: int, data: SurveyUpdate, request: Request, session: SessionDep, user: RequireAdmin
) -> SurveyRead:
    survey = service.get_survey(session, survey_id)
    old_slug = survey.slug
    survey = service.update_survey(session, survey, data, user)
    _forget_rules(request, old_slug, survey.slug)
    return service.to_read(survey, app_settings(request))


@router.post(
    "/{survey_id:int}/open",
    response_model=SurveyRead,
    responses=problem_responses(NotFound, Invalid),
)
def open_survey(
    survey_id: int, request: Request, session: SessionDep, user: RequireAdmin
) -> SurveyRead:
    survey = service.set_status(session, service.get_survey(session, survey_id), "open", user)
    _forget_rules(request, survey.slug)
    return service.to_read(survey, app_settings(request))


@router.post(
    "/{survey_id:int}/close", response_model=SurveyRead, responses=problem_responses(NotFound)
)
def close_survey(
    survey_id: int, request: Request, session: SessionDep, user: RequireAdmin
) -> SurveyRead:
    survey = service.set_status(session, service.get_survey(session, survey_id), "closed", user)
    _forget_rules(request, survey.slug)
    return service.to_read(survey, app_settings(request))


CSV_COLUMNS = ("id", "link", "status", "created_at", "expires_at", "used_at")


def _invitations_csv(items: list[InvitationRead], filename: str) -> Response:
    keys = sorted({k for item in items for k in item.attributes})
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*CSV_COLUMNS, *keys])
    for item in items:
        row = item.model_dump(mode="json")
        writer.writerow(
            [
                *(row[c] if row[c] is not None else "" for c in CSV_COLUMNS),
                *(item.attributes.get(k, "") for k in keys),
            ]
        )
    return Response(
        buffer.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _wants_csv(accept: str | None, fmt: str | None) -> bool:
    return fmt == "csv" or (fmt is None and accept is not None and "text/csv" in accept)


@router.post(
    "/{survey_id:int}/invitations",
    status_code=201,
    response_model=list[InvitationRead],
    responses={
        **problem_responses(NotFound, Conflict, Invalid),
        201: {"content": {"text/csv": {}}},
    },
)
def create_invitations(
    survey_id: int,
    data: InvitationBatchCreate,
    request: Request,
    session: SessionDep,
    user: RequireAdmin,
    accept: Annotated[str | None, Header()] = None,
    format: Annotated[str | None, Query(pattern="^(json|csv)$")] = None,
) -> Response | list[InvitationRead]:
    """Create single-use invitations; answers their full links (JSON, or CSV by Accept/format)."""
    settings = app_settings(request)
    survey = service.get_survey(session, survey_id)
    rows = service.create_invitations(session, survey, data, settings, user)
    items = [service.invitation_read(r, settings) for r in rows]
    if _wants_csv(accept, format):
        response = _invitations_csv(items, f"invitations-survey-{survey.id}.csv")
        response.status_code = 201
        return response
    return items


@router.get(
    "/{survey_id:int}/invitations",
    response_model=InvitationPage,
    responses={**problem_responses(NotFound), 200: {"content": {"text/csv": {}}}},
)
def list_invitations(
    survey_id: int,
    request: Request,
    session: SessionDep,
    size: PageSize,
    _user: RequireAdmin,
    cursor: str | None = None,
    accept: Annotated[str | None, Header()] = None,
    format: Annotated[str | None, Query(pattern="^(json|csv)$")] = None,
) -> Response | InvitationPage:
    """List invitations with their links; the CSV form holds all of them in one download."""
    settings = app_settings(request)
    survey = service.get_survey(session, survey_id)
    if _wants_csv(accept, format):
        items: list[InvitationRead] = []
        next_cursor: str | None = None
        while True:
            page = service.list_invitations(
                session, survey, settings, cursor=next_cursor, limit=1000
            )
            items.extend(page.items)
            next_cursor = page.next_cursor
            if next_cursor is None:
                break
        return _invitations_csv(items, f"invitations-survey-{survey.id}.csv")
    return service.list_invitations(session, survey, settings, cursor=cursor, limit=size)


@public_router.get(
    "/{slug}", response_model=PublicSurvey, responses=problem_responses(NotFound, Gone)
)
def public_survey(slug: str, request: Request, session: SessionDep) -> PublicSurvey:
    """The survey's questions and choices, for a custom front end."""
    survey = service.find_by_slug(session, slug)
    if survey is None or service.survey_state(survey) == "not_open":
        raise NotFound(f"no open survey at {slug!r}")
    if service.survey_state(survey) == "closed":
        raise Gone("this survey is closed and no longer accepts stories")
    return service.to_public(survey, app_settings(request))


__all__ = ["public_router", "router"]
