"""Cases API (admins and case managers only): list with filters, read one (with the contact,
audited), change the status, add notes; and the counts the dashboard shows."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from app.auth import RequireCaseManager
from app.cases import service
from app.cases.schemas import (
    CaseNoteCreate,
    CaseNoteRead,
    CasePage,
    CaseRead,
    CaseStatus,
    CaseSummary,
    CaseUpdate,
)
from app.config import app_settings
from app.db import SessionDep
from app.errors import Conflict, Forbidden, NotFound, problem_responses
from app.pagination import PageSize

router = APIRouter(prefix="/api/v1/cases", tags=["cases"], responses=problem_responses(Forbidden))


@router.get("", response_model=CasePage)
def list_cases(
    session: SessionDep,
    _user: RequireCaseManager,
    size: PageSize,
    survey_id: int | None = None,
    status: CaseStatus | None = None,
    code: Annotated[str | None, Query(description="Stories whose final codes include it")] = None,
    cursor: str | None = None,
) -> CasePage:
    """Cases oldest first; contacts are not in the list (read a case to see its contact)."""
    items, next_cursor = service.list_cases(
        session, survey_id=survey_id, status=status, code=code, cursor=cursor, limit=size
    )
    return CasePage(items=items, next_cursor=next_cursor)


@router.get("/summary", response_model=CaseSummary)
def case_summary(
    session: SessionDep, _user: RequireCaseManager, survey_id: int | None = None
) -> CaseSummary:
    """Cases per status and the time from opening to resolution."""
    return service.summary(session, survey_id=survey_id)


@router.get("/{case_id:int}", response_model=CaseRead, responses=problem_responses(NotFound))
def read_case(
    case_id: int, request: Request, session: SessionDep, user: RequireCaseManager
) -> CaseRead:
    """One case with the respondent's contact in clear (the read is audited)."""
    return service.get_case(session, app_settings(request), case_id, user)


@router.patch(
    "/{case_id:int}", response_model=CaseRead, responses=problem_responses(NotFound, Conflict)
)
def update_case(
    case_id: int,
    data: CaseUpdate,
    request: Request,
    session: SessionDep,
    user: RequireCaseManager,
    version: Annotated[int | None, Query(description="Refuse if the case changed")] = None,
) -> CaseRead:
    """Move a case: open -> contacted -> resolved (or back to open)."""
    return service.set_status(
        session, app_settings(request), case_id, data.status, user, expected_version=version
    )


@router.post(
    "/{case_id:int}/notes",
    status_code=201,
    response_model=CaseNoteRead,
    responses=problem_responses(NotFound),
)
def add_note(
    case_id: int, data: CaseNoteCreate, session: SessionDep, user: RequireCaseManager
) -> CaseNoteRead:
    return service.add_note(session, case_id, data.body, user)
