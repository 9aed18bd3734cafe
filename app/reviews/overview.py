"""What a coder's home page shows: the stories they hold but have not coded (left half-done),
the stories assigned to them, their work per survey, and whether the queue has more. Each
query is bounded (a page, or a capped count), so the page stays fast at a million stories."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.auth import Principal
from app.models import Assignment, Coding, Incident, ReviewLease, Survey
from app.models.base import utcnow
from app.reviews import queue

LIST_LIMIT = 20
# The queue is counted up to this many stories ("1,000 or more"): an exact count would scan
# every open story on each visit.
QUEUE_COUNT_CAP = 1000


@dataclass(frozen=True)
class StoryLine:
    incident_id: int
    survey_title: str
    submitted_at: datetime
    valence: str
    until: datetime | None = None


@dataclass(frozen=True)
class SurveyWork:
    survey_id: int
    title: str
    status: str
    coded_by_me: int
    assigned_to_me: int


@dataclass(frozen=True)
class Overview:
    held: list[StoryLine]
    assigned: list[StoryLine]
    assigned_total: int
    surveys: list[SurveyWork]
    coded_total: int
    queue_count: int
    queue_capped: bool


def overview(session: Session, user: Principal) -> Overview:
    now = utcnow()
    open_and_mine_to_code = (
        Incident.status.in_(queue.OPEN_STATUSES),
        ~queue._coded_by(user.id),
    )
    held = [
        StoryLine(r.id, r.title, r.submitted_at, r.valence, r.expires_at)
        for r in session.execute(
            select(
                Incident.id,
                Survey.title,
                Incident.submitted_at,
                Incident.valence,
                ReviewLease.expires_at,
            )
            .join(ReviewLease, ReviewLease.incident_id == Incident.id)
            .join(Survey, Survey.id == Incident.survey_id)
            .where(
                ReviewLease.coder_id == user.id,
                ReviewLease.expires_at > now,
                *open_and_mine_to_code,
            )
            .order_by(ReviewLease.created_at, Incident.id)
            .limit(LIST_LIMIT)
        )
    ]
    assigned_query = (
        select(Incident.id, Survey.title, Incident.submitted_at, Incident.valence)
        .join(Assignment, Assignment.incident_id == Incident.id)
        .join(Survey, Survey.id == Incident.survey_id)
        .where(Assignment.researcher_id == user.id, *open_and_mine_to_code)
    )
    assigned = [
        StoryLine(r.id, r.title, r.submitted_at, r.valence)
        for r in session.execute(
            assigned_query.order_by(Incident.submitted_at, Incident.id).limit(LIST_LIMIT)
        )
    ]
    assigned_by_survey = dict(
        session.execute(
            select(Incident.survey_id, func.count(Assignment.id))
            .join(Assignment, Assignment.incident_id == Incident.id)
            .where(Assignment.researcher_id == user.id, *open_and_mine_to_code)
            .group_by(Incident.survey_id)
        ).all()
    )
    coded_by_survey = dict(
        session.execute(
            select(Incident.survey_id, func.count(Coding.id))
            .join(Incident, Incident.id == Coding.incident_id)
            .where(Coding.coder_id == user.id)
            .group_by(Incident.survey_id)
        ).all()
    )
    surveys = [
        SurveyWork(
            s.id,
            s.title,
            s.status,
            coded_by_survey.get(s.id, 0),
            assigned_by_survey.get(s.id, 0),
        )
        for s in session.execute(select(Survey.id, Survey.title, Survey.status).order_by(Survey.id))
    ]
    waiting = (
        session.scalar(
            select(func.count()).select_from(
                select(Incident.id)
                .where(*queue._available(user.id, now))
                .limit(QUEUE_COUNT_CAP + 1)
                .subquery()
            )
        )
        or 0
    )
    return Overview(
        held=held,
        assigned=assigned,
        assigned_total=sum(assigned_by_survey.values()),
        surveys=surveys,
        coded_total=sum(coded_by_survey.values()),
        queue_count=min(waiting, QUEUE_COUNT_CAP),
        queue_capped=waiting > QUEUE_COUNT_CAP,
    )
