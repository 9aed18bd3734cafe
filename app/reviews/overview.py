"""What a coder's home page shows: the stories they hold but have not coded (left half-done),
the stories assigned to them, their work per survey, and whether the queue has more. Each
query is bounded (a page, or a capped count), so the page stays fast at a million stories."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from app.auth import Principal
from app.models import Assignment, Coding, Incident, ReviewLease, Survey
from app.models.base import utcnow
from app.reviews import queue

LIST_LIMIT = 20
# Counted up to this many ("100 or more"): an exact count would visit every open story (the
# queue) or every story a coder ever coded (per survey) on each visit of the page.
QUEUE_COUNT_CAP = 100
CODED_COUNT_CAP = 1000


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
    coded_capped: bool
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
    coded_cap: int = CODED_COUNT_CAP


def overview(session: Session, user: Principal) -> Overview:
    now = utcnow()
    open_and_mine_to_code = (
        Incident.status.in_(queue.OPEN_STATUSES),
        ~queue._coded_by(user.id),
    )
    # Leases first (a coder holds a handful), then their stories: led by the open stories
    # instead, a planner may walk every open story to find the few held ones.
    leases = dict(
        session.execute(
            select(ReviewLease.incident_id, ReviewLease.expires_at)
            .where(ReviewLease.coder_id == user.id, ReviewLease.expires_at > now)
            .order_by(ReviewLease.created_at, ReviewLease.id)
            .limit(LIST_LIMIT)
        ).all()
    )
    held_rows = (
        {
            r.id: r
            for r in session.execute(
                select(Incident.id, Survey.title, Incident.submitted_at, Incident.valence)
                .join(Survey, Survey.id == Incident.survey_id)
                .where(Incident.id.in_(list(leases)), *open_and_mine_to_code)
            )
        }
        if leases
        else {}
    )
    held = [
        StoryLine(r.id, r.title, r.submitted_at, r.valence, leases[r.id])
        for incident_id in leases
        if (r := held_rows.get(incident_id)) is not None
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
    coded_total = (
        session.scalar(select(func.count(Coding.id)).where(Coding.coder_id == user.id)) or 0
    )
    listed = session.execute(
        select(Survey.id, Survey.title, Survey.status).order_by(Survey.id)
    ).all()
    surveys = []
    for survey in listed:
        if len(listed) == 1:
            coded, capped = coded_total, False
        else:
            found = _capped(
                session,
                select(Coding.id)
                .join(Incident, Incident.id == Coding.incident_id)
                .where(Coding.coder_id == user.id, Incident.survey_id == survey.id),
                CODED_COUNT_CAP,
            )
            coded, capped = min(found, CODED_COUNT_CAP), found > CODED_COUNT_CAP
        surveys.append(
            SurveyWork(
                survey.id,
                survey.title,
                survey.status,
                coded,
                capped,
                assigned_by_survey.get(survey.id, 0),
            )
        )
    waiting = _capped(
        session, select(Incident.id).where(*queue._available(user.id, now)), QUEUE_COUNT_CAP
    )
    return Overview(
        held=held,
        assigned=assigned,
        assigned_total=sum(assigned_by_survey.values()),
        surveys=surveys,
        coded_total=coded_total,
        queue_count=min(waiting, QUEUE_COUNT_CAP),
        queue_capped=waiting > QUEUE_COUNT_CAP,
    )


def _capped(session: Session, query: Select[Any], cap: int) -> int:
    """The number of rows of `query`, counted up to cap + 1."""
    return session.scalar(select(func.count()).select_from(query.limit(cap + 1).subquery())) or 0
