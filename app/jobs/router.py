"""Job API: what the worker is doing, what failed and why; admins may retry a failed job."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import select

from app.auth import RequireAdmin
from app.db import SessionDep
from app.errors import Conflict, Forbidden, NotFound, problem_responses
from app.jobs import queue
from app.models import Job
from app.pagination import keyset_page

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"], responses=problem_responses(Forbidden))


class JobRead(BaseModel):
    id: int
    kind: str
    subject: str | None
    status: Literal["queued", "running", "done", "failed"]
    attempts: int
    max_attempts: int
    run_after: datetime
    last_error: str | None
    result: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime


class JobPage(BaseModel):
    items: list[JobRead]
    next_cursor: str | None


def _get(session: SessionDep, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"job {job_id} does not exist")
    return job


@router.get("", response_model=JobPage)
def list_jobs(
    session: SessionDep,
    _user: RequireAdmin,
    status: Literal["queued", "running", "done", "failed"] | None = None,
    kind: str | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JobPage:
    query = select(Job)
    if status is not None:
        query = query.where(Job.status == status)
    if kind is not None:
        query = query.where(Job.kind == kind)
    rows, next_cursor = keyset_page(session, query, Job.id, cursor, limit)
    return JobPage(
        items=[JobRead.model_validate(r, from_attributes=True) for r in rows],
        next_cursor=next_cursor,
    )


@router.get("/{job_id:int}", response_model=JobRead, responses=problem_responses(NotFound))
def read_job(job_id: int, session: SessionDep, _user: RequireAdmin) -> JobRead:
    return JobRead.model_validate(_get(session, job_id), from_attributes=True)


@router.post(
    "/{job_id:int}/retry", response_model=JobRead, responses=problem_responses(NotFound, Conflict)
)
def retry_job(job_id: int, session: SessionDep, _user: RequireAdmin) -> JobRead:
    job = _get(session, job_id)
    if job.status != "failed":
        raise Conflict(f"job {job_id} is {job.status}; only failed jobs can be retried")
    queue.retry(session, job)
    return JobRead.model_validate(job, from_attributes=True)
