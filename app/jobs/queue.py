"""A job queue in the database: enqueue, claim (SKIP LOCKED on PostgreSQL), finish, retry.

A claimed job carries a lease (`locked_until`); a worker that dies leaves its jobs to be claimed
again when the lease runs out, so jobs survive restarts. Failures are retried with exponential
backoff and, after `max_attempts`, kept as `failed` with their error for the API to show."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.models import Job
from app.models.base import utcnow

BACKOFF_BASE_SECONDS = 5
BACKOFF_MAX_SECONDS = 3600


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    kind: str
    payload: dict[str, Any]
    attempts: int
    max_attempts: int


def enqueue(
    session: Session,
    kind: str,
    payload: dict[str, Any],
    *,
    subject: str | None = None,
    dedupe: bool = False,
    max_attempts: int = 5,
) -> int | None:
    """Add a job and return its id; with `dedupe`, a job already queued for the same kind and
    subject makes this a no-op (None)."""
    enqueue_many(session, kind, [(payload, subject)], dedupe=dedupe, max_attempts=max_attempts)
    return session.scalar(
        select(Job.id)
        .where(Job.kind == kind, Job.subject == subject, Job.status == "queued")
        .order_by(Job.id.desc())
        .limit(1)
    )


def enqueue_many(
    session: Session,
    kind: str,
    jobs: Iterable[tuple[dict[str, Any], str | None]],
    *,
    dedupe: bool = True,
    max_attempts: int = 5,
) -> None:
    """Add jobs given as (payload, subject); with `dedupe`, one queued job per kind+subject."""
    rows = [
        {
            "kind": kind,
            "payload": payload,
            "subject": subject,
            "dedupe_key": f"{kind}:{subject}" if dedupe and subject else None,
            "status": "queued",
            "attempts": 0,
            "max_attempts": max_attempts,
            "run_after": utcnow(),
            "created_at": utcnow(),
            "updated_at": utcnow(),
        }
        for payload, subject in jobs
    ]
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(Job).on_conflict_do_nothing(index_elements=["dedupe_key"])
    for start in range(0, len(rows), 1000):
        session.execute(statement, rows[start : start + 1000])


def _due(now: datetime) -> Any:
    return or_(
        and_(Job.status == "queued", Job.run_after <= now),
        and_(Job.status == "running", Job.locked_until < now),
    )


def lock_due(
    session: Session, *, kinds: Sequence[str], limit: int, now: datetime | None = None
) -> list[ClaimedJob]:
    """Lock up to `limit` queued, due jobs for the rest of this transaction, without a lease.

    For short jobs done inside the same transaction (then `finish`ed): a crash rolls everything
    back and the jobs stay queued. Other workers skip the locked rows (PostgreSQL); SQLite's
    single writer serialises them. Jobs whose lease ran out are left to `claim`, so that this
    query stays on the (status, run_after) index."""
    now = now or utcnow()
    rows = session.execute(
        select(Job.id, Job.kind, Job.payload, Job.attempts, Job.max_attempts)
        .where(Job.status == "queued", Job.run_after <= now, Job.kind.in_(kinds))
        .order_by(Job.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if rows:
        # Like `claim`: a job being worked on no longer holds its dedupe key, so a request that
        # arrives meanwhile (a new model, a codebook edit) queues a new job instead of being
        # swallowed by the one about to be deleted.
        session.execute(
            update(Job)
            .where(Job.id.in_([r.id for r in rows]))
            .values(dedupe_key=None)
            .execution_options(synchronize_session=False)
        )
    return [ClaimedJob(r.id, r.kind, r.payload, r.attempts, r.max_attempts) for r in rows]


def claim(
    session: Session,
    worker: str,
    *,
    kinds: Sequence[str],
    limit: int,
    lease_seconds: int,
    now: datetime | None = None,
) -> list[ClaimedJob]:
    """Take up to `limit` due jobs (queued, or running with an expired lease)."""
    now = now or utcnow()
    query = (
        select(Job.id, Job.kind, Job.payload, Job.attempts, Job.max_attempts)
        .where(_due(now), Job.kind.in_(kinds))
        .order_by(Job.id)
        .limit(limit)
        .with_for_update(skip_locked=True)  # PostgreSQL; SQLite has one writer at a time
    )
    rows = session.execute(query).all()
    if not rows:
        return []
    ids = [row.id for row in rows]
    session.execute(
        update(Job)
        .where(Job.id.in_(ids))
        .values(
            status="running",
            locked_by=worker,
            locked_until=now + timedelta(seconds=lease_seconds),
            attempts=Job.attempts + 1,
            # A running job no longer holds its dedupe key: new work for the same story queues.
            dedupe_key=None,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return [
        ClaimedJob(row.id, row.kind, row.payload, row.attempts + 1, row.max_attempts)
        for row in rows
    ]


def finish(
    session: Session,
    job_ids: Sequence[int],
    *,
    keep: bool = False,
    result: dict[str, Any] | None = None,
    worker: str | None = None,
) -> int:
    """Mark jobs done (kept, with their result) or delete them (high-volume kinds); returns how
    many. With `worker` (jobs taken by `claim`), only jobs that worker still holds: one whose
    lease ran out and was claimed by another worker is left to that worker."""
    if not job_ids:
        return 0
    mine: ColumnElement[bool] = Job.id.in_(job_ids)
    if worker is not None:
        mine = and_(mine, Job.locked_by == worker)
    if keep:
        statement: Any = (
            update(Job)
            .where(mine)
            .values(status="done", result=result, locked_by=None, locked_until=None)
        )
    else:
        statement = delete(Job).where(mine)
    outcome = session.execute(statement.execution_options(synchronize_session=False))
    return int(getattr(outcome, "rowcount", 0) or 0)


def heartbeat(
    session: Session,
    job: ClaimedJob,
    worker: str,
    lease_seconds: int,
    progress: dict[str, Any] | None = None,
) -> bool:
    """A long job's sign of life: renew its lease and record its progress in `result`;
    False when the job is no longer this worker's."""
    now = utcnow()
    values: dict[str, Any] = {"locked_until": now + timedelta(seconds=lease_seconds)}
    if progress is not None:
        values["result"] = progress
    outcome = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.locked_by == worker)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(outcome, "rowcount", 0))


def backoff_seconds(attempts: int) -> int:
    return int(min(BACKOFF_BASE_SECONDS * 2 ** max(attempts - 1, 0), BACKOFF_MAX_SECONDS))


def fail(
    session: Session,
    job: ClaimedJob,
    error: str,
    *,
    final: bool = False,
    worker: str | None = None,
    now: datetime | None = None,
    retry_in: float | None = None,
) -> str:
    """Record a failure: retried later with backoff (or after `retry_in` seconds: a kind with
    its own schedule), or `failed` after the last attempt (or at once when `final`: an
    explained failure that a retry would only repeat). With `worker`, only while that worker
    still holds the job."""
    now = now or utcnow()
    delay = backoff_seconds(job.attempts) if retry_in is None else retry_in
    final = final or job.attempts >= job.max_attempts
    mine: ColumnElement[bool] = Job.id == job.id
    if worker is not None:
        mine = and_(mine, Job.locked_by == worker)
    session.execute(
        update(Job)
        .where(mine)
        .values(
            status="failed" if final else "queued",
            run_after=now if final else now + timedelta(seconds=delay),
            last_error=error[:4000],
            locked_by=None,
            locked_until=None,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return "failed" if final else "queued"


def retry(session: Session, job: Job) -> None:
    """Put a failed job back in the queue (an admin's decision after fixing the cause)."""
    job.status = "queued"
    job.attempts = 0
    job.run_after = utcnow()
    job.last_error = None
    session.flush()
