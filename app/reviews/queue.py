"""The review queue: which story a coder gets next (with a lease, so that two coders are not
handed the same single-coded story), batch assignments, and each researcher's progress."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, case, delete, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import audit
from app.auth import Principal
from app.errors import Conflict, Invalid, NotFound
from app.models import (
    Assignment,
    Coding,
    CodingCode,
    Incident,
    ReviewLease,
    Suggestion,
    Survey,
    User,
)
from app.models.base import utcnow
from app.reviews.schemas import AssignmentCreate, AssignmentResult, CoderAgreement, Progress
from app.reviews.service import ensure_coders_required

# How long a handed-out story stays reserved for its coder; an expired lease returns it.
LEASE_MINUTES = 30
OPEN_STATUSES = ("new", "in_review")
# Candidates a caller may find taken by a concurrent hand-out before one sticks.
MAX_ATTEMPTS = 20


def _coded_by(coder_id: int) -> ColumnElement[bool]:
    return exists().where(Coding.incident_id == Incident.id, Coding.coder_id == coder_id)


def _leased_by(coder_id: int, now: datetime) -> ColumnElement[bool]:
    return exists().where(
        ReviewLease.incident_id == Incident.id,
        ReviewLease.coder_id == coder_id,
        ReviewLease.expires_at > now,
    )


def _available(coder_id: int, now: datetime) -> list[ColumnElement[bool]]:
    """Stories the coder could be handed: open, not coded or held by them, and with room for
    another coder once the codings and the other coders' live leases are counted."""
    codings = (
        select(func.count(Coding.id)).where(Coding.incident_id == Incident.id).scalar_subquery()
    )
    leases = (
        select(func.count(ReviewLease.id))
        .where(
            ReviewLease.incident_id == Incident.id,
            ReviewLease.coder_id != coder_id,
            ReviewLease.expires_at > now,
        )
        .scalar_subquery()
    )
    return [
        Incident.status.in_(OPEN_STATUSES),
        ~_coded_by(coder_id),
        ~_leased_by(coder_id, now),
        codings + leases < func.coalesce(Incident.coders_required, 1),
    ]


def _survey(survey_id: int | None) -> list[ColumnElement[bool]]:
    return [Incident.survey_id == survey_id] if survey_id is not None else []


def _still_available(session: Session, incident_id: int, coder_id: int, now: datetime) -> bool:
    # A statement of its own: on PostgreSQL (READ COMMITTED) it sees every lease committed
    # before we took the row lock, which the candidate query's snapshot may have missed.
    return bool(
        session.scalar(
            select(func.count(Incident.id)).where(
                Incident.id == incident_id, *_available(coder_id, now)
            )
        )
    )


def next_story(
    session: Session, user: Principal, *, survey_id: int | None
) -> tuple[Incident, ReviewLease] | None:
    """Hand the caller a story with a lease; None when nothing is left for them.

    A story the caller already holds comes back (with a renewed lease). Otherwise: stories
    assigned to the caller first, then unassigned ones, then those assigned to others; within
    each, the survey's review order (least certain suggestions, or oldest, first).
    """
    now = utcnow()
    expires = now + timedelta(minutes=LEASE_MINUTES)
    session.execute(
        delete(ReviewLease).where(ReviewLease.coder_id == user.id, ReviewLease.expires_at <= now)
    )
    held = session.execute(
        select(ReviewLease, Incident)
        .join(Incident, Incident.id == ReviewLease.incident_id)
        .where(
            ReviewLease.coder_id == user.id,
            Incident.status.in_(OPEN_STATUSES),
            ~_coded_by(user.id),
            *_survey(survey_id),
        )
        .order_by(ReviewLease.created_at, ReviewLease.id)
        .limit(1)
    ).first()
    if held is not None:
        lease, incident = held
        lease.expires_at = expires
        session.flush()
        return incident, lease

    assigned_to_me = exists().where(
        Assignment.incident_id == Incident.id, Assignment.researcher_id == user.id
    )
    assigned = exists().where(Assignment.incident_id == Incident.id)
    certainty = case((Survey.review_order == "least_certain", Suggestion.certainty), else_=None)
    query = (
        select(Incident)
        .join(Survey, Survey.id == Incident.survey_id)
        .outerjoin(Suggestion, Suggestion.incident_id == Incident.id)
        .where(*_available(user.id, now), *_survey(survey_id))
        .order_by(
            case((assigned_to_me, 0), (assigned, 2), else_=1),
            certainty.asc().nulls_last(),
            Incident.submitted_at,
            Incident.id,
        )
        .limit(1)
        # PostgreSQL: a row another hand-out is deciding on is skipped, not waited for.
        # SQLite has one writer at a time (BEGIN IMMEDIATE) and ignores the clause.
        .with_for_update(skip_locked=True, of=Incident)
    )
    passed: list[int] = []
    for _ in range(MAX_ATTEMPTS):
        attempt = query.where(Incident.id.not_in(passed)) if passed else query
        candidate = session.scalars(attempt).first()
        if candidate is None:
            return None
        if not _still_available(session, candidate.id, user.id, now):
            passed.append(candidate.id)
            continue
        ensure_coders_required(session, candidate)
        lease = ReviewLease(incident_id=candidate.id, coder_id=user.id, expires_at=expires)
        try:
            # The unique (incident, coder) pair is the last guard against the same coder's
            # two simultaneous calls taking one story twice.
            with session.begin_nested():
                session.add(lease)
                session.flush()
        except IntegrityError:
            passed.append(candidate.id)
            continue
        return candidate, lease
    return None


def release(session: Session, user: Principal, incident_id: int) -> None:
    """Give a held story back to the queue."""
    session.execute(
        delete(ReviewLease).where(
            ReviewLease.incident_id == incident_id, ReviewLease.coder_id == user.id
        )
    )


# Assignments ------------------------------------------------------------------------------------


def _researcher(session: Session, name: str) -> User:
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise NotFound(f"there is nobody called {name!r}")
    if user.role == "viewer":
        raise Invalid(f"{name!r} is a viewer; only researchers and admins code stories")
    return user


def assign(session: Session, data: AssignmentCreate, actor: Principal) -> AssignmentResult:
    """Assign stories to a researcher: named ones, or a survey's oldest stories that are open,
    assigned to nobody and not coded by the researcher."""
    researcher = _researcher(session, data.researcher)
    if data.incident_ids is not None:
        ids = list(dict.fromkeys(data.incident_ids))
        found = set(session.scalars(select(Incident.id).where(Incident.id.in_(ids))))
        missing = [i for i in ids if i not in found]
        if missing:
            raise NotFound(f"incidents do not exist: {', '.join(map(str, missing))}")
    else:
        if session.get(Survey, data.survey_id) is None:
            raise NotFound(f"survey {data.survey_id} does not exist")
        ids = list(
            session.scalars(
                select(Incident.id)
                .where(
                    Incident.survey_id == data.survey_id,
                    Incident.status.in_(OPEN_STATUSES),
                    ~exists().where(Assignment.incident_id == Incident.id),
                    ~_coded_by(researcher.id),
                )
                .order_by(Incident.submitted_at, Incident.id)
                .limit(data.count)
            )
        )
    already = set(
        session.scalars(
            select(Assignment.incident_id).where(
                Assignment.researcher_id == researcher.id, Assignment.incident_id.in_(ids)
            )
        )
    )
    new = [i for i in ids if i not in already]
    try:
        with session.begin_nested():
            session.add_all(
                Assignment(incident_id=i, researcher_id=researcher.id, assigned_by=actor.name)
                for i in new
            )
            session.flush()
    except IntegrityError as exc:
        raise Conflict("a concurrent request assigned some of these stories; retry") from exc
    if new:
        audit.record(
            session,
            actor,
            "review.assign",
            "user",
            researcher.id,
            after={"researcher": researcher.name, "incident_ids": new},
        )
    return AssignmentResult(
        researcher=researcher.name, assigned=new, already_assigned=[i for i in ids if i in already]
    )


# Progress ---------------------------------------------------------------------------------------


def progress(session: Session, name: str) -> Progress:
    """How far a researcher is: stories coded, left in their queue, assigned and not coded, and
    how often they agreed with the other coder of a double-coded story."""
    researcher = _researcher(session, name)
    now = utcnow()
    coded = session.scalar(select(func.count(Coding.id)).where(Coding.coder_id == researcher.id))
    queue = session.scalar(select(func.count(Incident.id)).where(*_available(researcher.id, now)))
    held = session.scalar(
        select(func.count(Incident.id)).where(
            Incident.status.in_(OPEN_STATUSES),
            _leased_by(researcher.id, now),
            ~_coded_by(researcher.id),
        )
    )
    assigned = session.scalar(
        select(func.count(Assignment.id))
        .join(Incident, Incident.id == Assignment.incident_id)
        .where(
            Assignment.researcher_id == researcher.id,
            Incident.status.in_(OPEN_STATUSES),
            ~_coded_by(researcher.id),
        )
    )
    return Progress(
        researcher=researcher.name,
        coded=coded or 0,
        remaining_in_queue=(queue or 0) + (held or 0),
        assigned_remaining=assigned or 0,
        agreement=_agreement(session, researcher.id),
    )


def _agreement(session: Session, coder_id: int) -> CoderAgreement:
    mine = select(Coding.incident_id).where(Coding.coder_id == coder_id)
    shared = (
        select(Coding.incident_id)
        .where(Coding.incident_id.in_(mine))
        .group_by(Coding.incident_id)
        .having(func.count(Coding.id) >= 2)
    )
    codings = session.execute(
        select(Coding.id, Coding.incident_id, Coding.excluded).where(Coding.incident_id.in_(shared))
    ).all()
    codes: dict[int, set[str]] = defaultdict(set)
    for coding_id, code in session.execute(
        select(CodingCode.coding_id, CodingCode.code)
        .join(Coding, Coding.id == CodingCode.coding_id)
        .where(Coding.incident_id.in_(shared), CodingCode.decision != "rejected")
    ):
        codes[coding_id].add(code)
    by_story: dict[int, list[frozenset[str] | None]] = defaultdict(list)
    for coding_id, incident_id, excluded in codings:
        by_story[incident_id].append(None if excluded else frozenset(codes[coding_id]))
    agreed = sum(1 for decisions in by_story.values() if len(set(decisions)) == 1)
    total = len(by_story)
    return CoderAgreement(
        double_coded=total, agreed=agreed, share=agreed / total if total else None
    )
