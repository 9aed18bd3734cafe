"""Erasure API: admins erase a story (with a reason); respondents withdraw theirs by receipt."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from app.auth import RequireAdmin
from app.db import SessionDep
from app.erasure import service
from app.errors import Forbidden, Invalid, NotFound, TooManyRequests, problem_responses
from app.models.base import utcnow
from app.protection import client_key
from app.surveys.service import find_by_slug

router = APIRouter(
    prefix="/api/v1/incidents", tags=["incidents"], responses=problem_responses(Forbidden)
)
public_router = APIRouter(prefix="/api/v1/public/surveys", tags=["public"])


class ErasureRead(BaseModel):
    incident_id: int
    erased_at: datetime
    models_marked: int = Field(
        description="Trained models that had learnt from the story (marked; retrain to forget)"
    )


class WithdrawalRequest(BaseModel):
    receipt_code: str = Field(min_length=8, max_length=40)


class WithdrawalRead(BaseModel):
    status: str = "withdrawn"


@router.delete(
    "/{incident_id:int}",
    response_model=ErasureRead,
    responses=problem_responses(NotFound, Invalid),
)
def erase_incident(
    incident_id: int,
    session: SessionDep,
    user: RequireAdmin,
    reason: Annotated[
        str, Query(min_length=1, max_length=service.MAX_REASON, description="Kept in the audit")
    ],
) -> ErasureRead:
    """Erase a story for good: its text, suggestions, codings, spans and memos. The audit trail
    keeps a tombstone without text; reports change in the same transaction."""
    erased = service.erase_incident(session, incident_id, reason=reason, actor=user)
    return ErasureRead(
        incident_id=erased.incident_id, erased_at=utcnow(), models_marked=erased.models_marked
    )


@public_router.post(
    "/{slug}/withdrawals",
    response_model=WithdrawalRead,
    responses=problem_responses(NotFound, TooManyRequests),
)
def withdraw(
    slug: str, data: WithdrawalRequest, request: Request, session: SessionDep
) -> WithdrawalRead:
    """A respondent withdraws their story with the receipt code they were given; the story is
    erased as an admin would erase it. Works after the survey has closed."""
    if not request.app.state.submit_limiter.allow(client_key(request)):
        raise TooManyRequests("too many attempts; wait a minute", headers={"Retry-After": "60"})
    survey = find_by_slug(session, slug)
    if survey is None:
        raise NotFound(f"no survey at {slug!r}")
    service.withdraw(session, data.receipt_code, survey_id=survey.id)
    return WithdrawalRead()
