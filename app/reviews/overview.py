"""What a coder's home page shows: the stories they hold but have not coded (left half-done),
the stories assigned to them, their work per survey, and whether the queue has more. Each
query is bounded (a page, or a capped count), so the page stays fast at a million stories."""

from __future__ import annotations

import threading
import weakref
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
# The queue is counted up to this many ("100 or more"): an exact count would visit every open
# story on each visit of the page.
QUEUE_COUNT_CAP = 100


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
    coded_total, coded_by_survey = coded_per_survey(session, user.id)
    surveys = [
        SurveyWork(
            survey.id,
            survey.title,
            survey.status,
            coded_by_survey.get(survey.id, 0),
            assigned_by_survey.get(survey.id, 0),
        )
        for survey in session.execute(
            select(Survey.id, Survey.title, Survey.status).order_by(Survey.id)
        )
    ]
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


# Per database (engine) and coder: (codings counted, highest coding id counted, codings per
# survey). Codings never change survey, so a coder's counts only grow by their new codings
# (ids above the highest counted); the sum is checked against the exact total on every use and
# the counts are rebuilt when they disagree (a story deleted with its codings).
_PerSurvey = dict[int, tuple[int, int, dict[int, int]]]
_per_survey: weakref.WeakKeyDictionary[Any, _PerSurvey] = weakref.WeakKeyDictionary()
_per_survey_lock = threading.Lock()


def _count_by_survey(session: Session, coder_id: int, after_id: int) -> tuple[dict[int, int], int]:
    """The coder's codings with ids above `after_id`, per survey, and the highest id seen."""
    counts: dict[int, int] = {}
    highest = after_id
    # Without an id bound the planner walks the coder's index (a bound of 0 can lure it into
    # the whole primary key).
    newer = [Coding.id > after_id] if after_id else []
    for survey, count, top in session.execute(
        select(Incident.survey_id, func.count(), func.max(Coding.id))
        .join(Incident, Incident.id == Coding.incident_id)
        .where(Coding.coder_id == coder_id, *newer)
        .group_by(Incident.survey_id)
    ):
        counts[survey] = count
        highest = max(highest, top)
    return counts, highest


def coded_per_survey(session: Session, coder_id: int) -> tuple[int, dict[int, int]]:
    """How many stories the coder coded, in all and per survey: exact, and after the first
    visit a process only counts the codings made since its last count (a range of the primary
    key), checked against the total (an index-only count)."""
    total = session.scalar(select(func.count()).where(Coding.coder_id == coder_id)) or 0
    with _per_survey_lock:
        cache = _per_survey.setdefault(session.get_bind(), {})
        cached = cache.get(coder_id)
    result: tuple[dict[int, int], int] | None = None
    if cached is not None:
        new, highest = _count_by_survey(session, coder_id, cached[1])
        counts = dict(cached[2])
        for survey, count in new.items():
            counts[survey] = counts.get(survey, 0) + count
        if sum(counts.values()) == total:
            result = counts, highest
    if result is None:
        result = _count_by_survey(session, coder_id, 0)
    with _per_survey_lock:
        cache[coder_id] = (total, result[1], result[0])
    return total, result[0]
