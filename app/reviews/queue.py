"""The review queue: which story a coder gets next (with a lease, so that two coders are not
handed the same single-coded story), batch assignments, and each researcher's progress."""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    Table,
    bindparam,
    case,
    delete,
    exists,
    func,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import audit
from app.auth import Principal
from app.db import written_by_core
from app.errors import Conflict, Invalid, NotFound
from app.incidents.service import (
    READ_KINDS,
    SuggestionRow,
    anything_to_read,
    as_utc,
    suggestion_columns,
    suggestion_row_of,
)
from app.models import (
    INCIDENT_STATUSES,
    Assignment,
    Coding,
    CodingCode,
    Incident,
    ReviewLease,
    Suggestion,
    Survey,
    User,
)
from app.models.base import UTCDateTime, utcnow
from app.reviews.notifications import unread
from app.reviews.schemas import (
    AssignmentCreate,
    AssignmentResult,
    CoderAgreement,
    DoubleCodingChoice,
    DoubleCodingResult,
    LeaseRead,
    Progress,
    SkippedStory,
    SurveyProgress,
    SurveyQueueCounts,
)
from app.reviews.service import FINAL_STATUSES, decide_coders_required, settle

# How long a handed-out story stays reserved for its coder; an expired lease returns it.
LEASE_MINUTES = 30
OPEN_STATUSES = ("new", "in_review")


def is_open() -> ColumnElement[bool]:
    """Incident.status IN the open statuses, written with literals (not bound parameters): the
    planners may use the partial indexes of open stories (migration 0007) only when the query
    says exactly what their WHERE says, and a parameter is not proof (SQLite; PostgreSQL's
    generic plans of prepared statements)."""
    return Incident.status.in_([literal_column(f"'{s}'") for s in OPEN_STATUSES])


# Candidates a caller may find taken by a concurrent hand-out before one sticks.
MAX_ATTEMPTS = 20


def _coded_by(coder_id: Any) -> ColumnElement[bool]:
    # coder_id (and now, below): a value, or a bindparam in the statements built once.
    return exists().where(Coding.incident_id == Incident.id, Coding.coder_id == coder_id)


def _leased_by(coder_id: Any, now: Any) -> ColumnElement[bool]:
    return exists().where(
        ReviewLease.incident_id == Incident.id,
        ReviewLease.coder_id == coder_id,
        ReviewLease.expires_at > now,
    )


def _available(coder_id: Any, now: Any) -> list[ColumnElement[bool]]:
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
        is_open(),
        ~_coded_by(coder_id),
        ~_leased_by(coder_id, now),
        codings + leases < func.coalesce(Incident.coders_required, 1),
    ]


def _survey(survey_id: int | None) -> list[ColumnElement[bool]]:
    return [Incident.survey_id == survey_id] if survey_id is not None else []


class Handed(NamedTuple):
    """A story handed out, its lease, the READ_KINDS it is known to have none of and its
    suggestion row, when read (see `to_reads`; both read by the candidate query on SQLite, by
    the lease's statement on PostgreSQL)."""

    incident: Incident
    lease: ReviewLease
    nothing_of: frozenset[str] = frozenset()
    suggestions: dict[int, SuggestionRow | None] | None = None


def next_story(session: Session, user: Principal, *, survey_id: int | None) -> Handed | None:
    """Hand the caller a story with a lease; None when nothing is left for them.

    A story the caller already holds comes back (with a renewed lease). Otherwise: stories
    assigned to the caller first, then unassigned ones, then those assigned to others; within
    each, the survey's review order (least certain suggestions, or oldest, first).

    The statements are built once (`_queries`) with bound parameters: building one per call
    cost more than running it (bench/review_throughput.py)."""
    now = utcnow()
    expires = now + timedelta(minutes=LEASE_MINUTES)
    conn = session.connection()
    postgres = conn.dialect.name == "postgresql"
    queries = _queries(survey_id is not None, postgres)
    params: dict[str, Any] = {"coder_id": user.id, "now": now}
    if survey_id is not None:
        params["survey_id"] = survey_id
    # Which tiers there are to look in, in one statement: a lease the caller holds, stories
    # assigned to them, surveys reviewed least certain first.
    flags = conn.execute(queries.flags, params).one()
    if not postgres and flags.expired:  # PostgreSQL: a data-modifying CTE of `flags`
        # Before the candidates: the caller's expired lease must not stand in the way of
        # their new one (the unique story and coder pair).
        conn.execute(_DROP_EXPIRED, params)
    if flags.held is not None:
        lease, incident = session.execute(queries.held, {"lease_id": flags.held}).one()
        lease.expires_at = expires
        session.flush()
        return Handed(incident, lease)

    tiers = [queries.assigned_to_caller] if flags.assigned else []
    if flags.least_certain:
        tiers.append(queries.least_certain)
    tiers += [queries.by_date, queries.assigned_to_others]
    for query in tiers:
        handed = _lease_first(session, query, params, user, now, expires)
        if handed is not None:
            return handed
    return None


@dataclass(frozen=True)
class _Queue:
    """The queue's statements, with bound parameters coder_id, now (and survey_id); the
    candidate queries answer (Incident, the survey's double-coding share)."""

    flags: Select[Any]
    held: Select[ReviewLease, Incident]
    assigned_to_caller: Select[Any]
    least_certain: Select[Any]
    by_date: Select[Any]
    assigned_to_others: Select[Any]


_leases_table = cast(Table, ReviewLease.__table__)
_incidents_table = cast(Table, Incident.__table__)
_DROP_EXPIRED = delete(_leases_table).where(
    _leases_table.c.coder_id == bindparam("coder_id"),
    _leases_table.c.expires_at <= bindparam("now"),
)


@functools.cache
def _queries(by_survey: bool, postgres: bool) -> _Queue:
    """Where the next story may come from, in order; each query can be answered from an index
    in the order it asks for (open stories by survey and date, suggestions by certainty), so
    finding the next story reads a few rows, not every story (it stayed flat at 1,000,000
    stories in bench/review_throughput.py; one ORDER BY over all tiers at once took 0.7 s at
    200,000).

    1. stories assigned to the caller (few), in the survey's review order;
    2. unassigned stories: of surveys reviewed `least_certain`, those with suggestions, least
       certain first (only when such a survey exists); then all others, oldest first;
    3. stories assigned to someone else (only once nothing else is left).

    `flags` says which of them there is any point in asking (and finds a lease the caller
    holds), in one statement; on PostgreSQL it also drops the caller's expired leases (a
    data-modifying CTE: its SELECT still sees them, hence `expires_at > now` there), on SQLite
    it says whether there are any to drop."""
    coder_id: Any = bindparam("coder_id")
    now: Any = bindparam("now")
    survey = [Incident.survey_id == bindparam("survey_id")] if by_survey else []
    available = [*_available(coder_id, now), *survey]
    assigned = exists().where(Assignment.incident_id == Incident.id)
    certainty = case((Survey.review_order == "least_certain", Suggestion.certainty), else_=None)
    in_order = (certainty.asc().nulls_last(), Incident.submitted_at, Incident.id)
    shares = Survey.__table__.alias("share_of")
    share = (
        select(shares.c.double_coding_share)
        .where(shares.c.id == Incident.survey_id)
        .correlate(Incident)
        .scalar_subquery()
        .label("double_coding_share")
    )

    def locked(query: Select[Any]) -> Select[Any]:
        # PostgreSQL: a row another hand-out is deciding on is skipped, not waited for (its
        # lease statement says what there is to read). SQLite has one writer at a time (BEGIN
        # IMMEDIATE), ignores the clause, and says here what there is to read of the story.
        query = query.add_columns(share)
        if not postgres:
            query = query.add_columns(
                *anything_to_read(Incident.id), *suggestion_columns(Incident.id)
            )
        return query.limit(1).with_for_update(skip_locked=True, of=Incident)

    held = (
        select(ReviewLease.id)
        .join(Incident, Incident.id == ReviewLease.incident_id)
        .where(
            ReviewLease.coder_id == coder_id,
            ReviewLease.expires_at > now,
            Incident.status.in_(OPEN_STATUSES),
            ~_coded_by(coder_id),
            *survey,
        )
        .order_by(ReviewLease.created_at, ReviewLease.id)
        .limit(1)
        .scalar_subquery()
        .label("held")
    )
    flags = select(
        held,
        exists().where(Assignment.researcher_id == coder_id).label("assigned"),
        exists()
        .where(
            Survey.review_order == "least_certain",
            *([Survey.id == bindparam("survey_id")] if by_survey else []),
        )
        .label("least_certain"),
    )
    if postgres:
        flags = flags.add_cte(_DROP_EXPIRED.cte("dropped"))
    else:  # whether there is anything for _DROP_EXPIRED to drop (mostly not: one statement)
        flags = flags.add_columns(
            exists()
            .where(ReviewLease.coder_id == coder_id, ReviewLease.expires_at <= now)
            .label("expired")
        )

    def with_order(query: Select[Any]) -> Select[Any]:
        return (
            query.join(Survey, Survey.id == Incident.survey_id)
            .outerjoin(Suggestion, Suggestion.incident_id == Incident.id)
            .order_by(*in_order)
        )

    by_date = "ix_incidents_open_by_survey_date" if by_survey else "ix_incidents_open_by_date"
    return _Queue(
        flags=flags,
        held=select(ReviewLease, Incident)
        .join(Incident, Incident.id == ReviewLease.incident_id)
        .where(ReviewLease.id == bindparam("lease_id")),
        assigned_to_caller=locked(
            with_order(
                select(Incident)
                .join(
                    Assignment,
                    (Assignment.incident_id == Incident.id)
                    & (Assignment.researcher_id == coder_id),
                )
                .where(*available)
            )
        ),
        least_certain=locked(
            select(Incident)
            .join(Survey, Survey.id == Incident.survey_id)
            .join(Suggestion, Suggestion.incident_id == Incident.id)
            .where(*available, ~assigned, Survey.review_order == "least_certain")
            .order_by(Suggestion.certainty, Incident.submitted_at, Incident.id)
        ),
        by_date=locked(
            select(Incident)
            .with_hint(Incident, f"INDEXED BY {by_date}", "sqlite")
            .where(*available, ~assigned)
            .order_by(Incident.submitted_at, Incident.id)
        ),
        assigned_to_others=locked(with_order(select(Incident).where(*available, assigned))),
    )


def _insert_lease(
    session: Session, incident_id: int, coder_id: int, now: datetime, expires: datetime
) -> ReviewLease | None:
    """The lease, or None when the caller holds this story already: the unique (incident,
    coder) pair is the last guard against the same coder's two simultaneous calls taking one
    story twice (ON CONFLICT DO NOTHING: no savepoint, no failed statement). SQLite."""
    values = {"incident_id": incident_id, "coder_id": coder_id, "expires_at": expires}
    lease_id = session.connection().execute(_SQLITE_LEASE, {**values, "created_at": now}).scalar()
    if lease_id is None:
        return None
    return ReviewLease(id=lease_id, created_at=now, **values)


_SET_CODERS_REQUIRED = (
    update(_incidents_table)
    .where(_incidents_table.c.id == bindparam("story"))
    .values(coders_required=bindparam("required"))
)
_SQLITE_LEASE = (
    sqlite.insert(_leases_table)
    .on_conflict_do_nothing(index_elements=["incident_id", "coder_id"])
    .returning(_leases_table.c.id)
)


def _postgres_lease(deciding: bool) -> Any:
    """PostgreSQL's lease: INSERT .. SELECT from the story while it is still available to the
    caller, which this statement (a snapshot taken after the candidate's row lock) sees with
    every lease committed before (the candidate query's snapshot may have missed one): the
    recheck and the INSERT in one round trip. `deciding`: also store the coders_required just
    decided (a data-modifying CTE; the ORM then has nothing to flush)."""
    coder_id: Any = bindparam("coder_id", type_=Integer)
    now: Any = bindparam("now", type_=UTCDateTime)
    still = select(
        Incident.id,
        coder_id,
        bindparam("expires_at", type_=UTCDateTime),
        bindparam("created_at", type_=UTCDateTime),
    ).where(Incident.id == bindparam("incident_id"), *_available(coder_id, now))
    statement = (
        postgresql.insert(_leases_table)
        .from_select(["incident_id", "coder_id", "expires_at", "created_at"], still)
        .on_conflict_do_nothing(index_elements=["incident_id", "coder_id"])
        # And, seen after the row lock too, which of the answer's reads would find anything.
        .returning(_leases_table.c.id, *anything_to_read(), *suggestion_columns())
    )
    if deciding:
        decided = (
            update(_incidents_table)
            .where(
                _incidents_table.c.id == bindparam("incident_id"),
                _incidents_table.c.coders_required.is_(None),
            )
            .values(coders_required=bindparam("coders_required"))
            .cte("decided")
        )
        statement = statement.add_cte(decided)
    return statement


_POSTGRES_LEASE = {deciding: _postgres_lease(deciding) for deciding in (False, True)}


def _lease_first(
    session: Session,
    query: Select[Any],
    params: dict[str, Any],
    user: Principal,
    now: datetime,
    expires: datetime,
) -> Handed | None:
    """Lease the first story the query finds that is still available to the caller."""
    passed: list[int] = []
    conn = session.connection()
    postgres = conn.dialect.name == "postgresql"
    for _ in range(MAX_ATTEMPTS):
        attempt = query.where(Incident.id.not_in(passed)) if passed else query
        found = session.execute(attempt, params).first()
        if found is None:
            return None
        candidate, share = found[0], found[1]
        if not postgres:
            # This transaction holds SQLite's write lock: what the candidate query saw is
            # what is there, so there is nothing to recheck.
            deciding = candidate.coders_required is None
            required = decide_coders_required(candidate, share)
            lease = _insert_lease(session, candidate.id, user.id, now, expires)
            if deciding:  # a Core UPDATE: the ORM's flush of it cost more than the lease
                conn.execute(_SET_CODERS_REQUIRED, {"story": candidate.id, "required": required})
                written_by_core(session, candidate, {"coders_required": required})
            if lease is not None:
                nothing = frozenset(kind for kind in READ_KINDS if not found._mapping[kind])
                read = {candidate.id: suggestion_row_of(candidate.id, found)}
                return Handed(candidate, lease, nothing, read)
        else:
            deciding = candidate.coders_required is None
            required = decide_coders_required(candidate, share)
            if deciding:  # written by the lease's statement
                written_by_core(session, candidate, {"coders_required": required})
            values = {"incident_id": candidate.id, "coder_id": user.id, "expires_at": expires}
            leased = conn.execute(
                _POSTGRES_LEASE[deciding],
                {
                    **values,
                    "created_at": now,
                    "now": now,
                    "coders_required": required,
                    "job_subject": f"incident:{candidate.id}",
                },
            ).first()
            if leased is not None:
                lease = ReviewLease(id=leased.id, created_at=now, **values)
                nothing = frozenset(kind for kind in READ_KINDS if not leased._mapping[kind])
                read = {candidate.id: suggestion_row_of(candidate.id, leased)}
                return Handed(candidate, lease, nothing, read)
            lease = None
        if lease is None:
            passed.append(candidate.id)
            continue
        return Handed(candidate, lease)
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


def _per_survey(session: Session, query: Any) -> dict[int, int]:
    return {int(survey_id): int(n) for survey_id, n in session.execute(query)}


def progress(session: Session, name: str, *, survey_id: int | None = None) -> Progress:
    """How far a researcher is: stories coded, left in their queue, assigned and not coded
    (in total and per survey), how often they agreed with the other coder of a double-coded
    story, the stories they must code again and their unread notifications."""
    researcher = _researcher(session, name)
    now = utcnow()
    survey = _survey(survey_id)
    coded = _per_survey(
        session,
        select(Incident.survey_id, func.count(Coding.id))
        .join(Incident, Incident.id == Coding.incident_id)
        .where(Coding.coder_id == researcher.id, *survey)
        .group_by(Incident.survey_id),
    )
    queue = _per_survey(
        session,
        select(Incident.survey_id, func.count(Incident.id))
        .where(*_available(researcher.id, now), *survey)
        .group_by(Incident.survey_id),
    )
    held = _per_survey(
        session,
        select(Incident.survey_id, func.count(Incident.id))
        .where(
            Incident.status.in_(OPEN_STATUSES),
            _leased_by(researcher.id, now),
            ~_coded_by(researcher.id),
            *survey,
        )
        .group_by(Incident.survey_id),
    )
    assigned = _per_survey(
        session,
        select(Incident.survey_id, func.count(Assignment.id))
        .join(Incident, Incident.id == Assignment.incident_id)
        .where(
            Assignment.researcher_id == researcher.id,
            Incident.status.in_(OPEN_STATUSES),
            ~_coded_by(researcher.id),
            *survey,
        )
        .group_by(Incident.survey_id),
    )
    ids = sorted(set(coded) | set(queue) | set(held) | set(assigned))
    titles = dict(session.execute(select(Survey.id, Survey.title).where(Survey.id.in_(ids))).all())
    by_survey = [
        SurveyProgress(
            survey_id=i,
            title=titles.get(i, ""),
            coded=coded.get(i, 0),
            remaining_in_queue=queue.get(i, 0) + held.get(i, 0),
            assigned_remaining=assigned.get(i, 0),
        )
        for i in ids
    ]
    return Progress(
        researcher=researcher.name,
        coded=sum(coded.values()),
        remaining_in_queue=sum(queue.values()) + sum(held.values()),
        assigned_remaining=sum(assigned.values()),
        agreement=_agreement(session, researcher.id),
        by_survey=by_survey,
        needs_revision=_needs_revision(session, researcher.id, survey),
        notifications=unread(session, researcher.id),
    )


def _needs_revision(
    session: Session, coder_id: int, survey: list[ColumnElement[bool]]
) -> list[int]:
    """Open stories where the coder's coding has no code left (a proposed code was rejected)."""
    has_code = exists().where(CodingCode.coding_id == Coding.id, CodingCode.decision != "rejected")
    return list(
        session.scalars(
            select(Coding.incident_id)
            .join(Incident, Incident.id == Coding.incident_id)
            .where(
                Coding.coder_id == coder_id,
                ~Coding.excluded,
                ~Coding.no_code_applies,
                ~has_code,
                Incident.status.in_(OPEN_STATUSES),
                *survey,
            )
            .order_by(Coding.incident_id)
        )
    )


# Per survey -------------------------------------------------------------------------------------


def survey_counts(session: Session, survey_id: int | None = None) -> list[SurveyQueueCounts]:
    """For each survey (or one): its stories by status, how many need two codings, wait for
    codings, are held right now, or wait for a decision on a proposed code."""
    now = utcnow()
    where = [Survey.id == survey_id] if survey_id is not None else []
    surveys = session.execute(
        select(Survey.id, Survey.title, Survey.double_coding_share)
        .where(*where)
        .order_by(Survey.id)
    ).all()
    if survey_id is not None and not surveys:
        raise NotFound(f"survey {survey_id} does not exist")
    by_status: dict[int, dict[str, int]] = defaultdict(dict)
    for sid, status, n in session.execute(
        select(Incident.survey_id, Incident.status, func.count())
        .where(*_survey(survey_id))
        .group_by(Incident.survey_id, Incident.status)
    ):
        by_status[sid][status] = int(n)
    double = _per_survey(
        session,
        select(Incident.survey_id, func.count())
        .where(Incident.coders_required >= 2, *_survey(survey_id))
        .group_by(Incident.survey_id),
    )
    codings = (
        select(func.count(Coding.id)).where(Coding.incident_id == Incident.id).scalar_subquery()
    )
    awaiting = _per_survey(
        session,
        select(Incident.survey_id, func.count())
        .where(
            Incident.status.in_(OPEN_STATUSES),
            codings < func.coalesce(Incident.coders_required, 1),
            *_survey(survey_id),
        )
        .group_by(Incident.survey_id),
    )
    leased = _per_survey(
        session,
        select(Incident.survey_id, func.count(func.distinct(ReviewLease.incident_id)))
        .join(Incident, Incident.id == ReviewLease.incident_id)
        .where(ReviewLease.expires_at > now, *_survey(survey_id))
        .group_by(Incident.survey_id),
    )
    waiting = _per_survey(
        session,
        select(Incident.survey_id, func.count(func.distinct(Coding.incident_id)))
        .join(Coding, Coding.incident_id == Incident.id)
        .join(CodingCode, CodingCode.coding_id == Coding.id)
        .where(
            CodingCode.proposal_id.is_not(None),
            Incident.status.in_(OPEN_STATUSES),
            *_survey(survey_id),
        )
        .group_by(Incident.survey_id),
    )
    return [
        SurveyQueueCounts(
            survey_id=sid,
            title=title,
            double_coding_share=share,
            stories=sum(by_status[sid].values()),
            by_status={status: by_status[sid].get(status, 0) for status in INCIDENT_STATUSES},
            double_coded=double.get(sid, 0),
            awaiting_codings=awaiting.get(sid, 0),
            leased_now=leased.get(sid, 0),
            waiting_for_proposals=waiting.get(sid, 0),
        )
        for sid, title, share in surveys
    ]


def list_leases(session: Session, survey_id: int | None = None) -> list[LeaseRead]:
    """Who holds which story until when (admins), soonest to expire first."""
    rows = session.execute(
        select(ReviewLease.incident_id, User.name, ReviewLease.expires_at)
        .join(User, User.id == ReviewLease.coder_id)
        .join(Incident, Incident.id == ReviewLease.incident_id)
        .where(ReviewLease.expires_at > utcnow(), *_survey(survey_id))
        .order_by(ReviewLease.expires_at, ReviewLease.id)
        .limit(10_000)
    ).all()
    return [LeaseRead(incident_id=i, researcher=n, expires_at=e) for i, n, e in rows]


# Choosing the double-coded stories ---------------------------------------------------------------


def choose_double_coding(
    session: Session, data: DoubleCodingChoice, actor: Principal
) -> DoubleCodingResult:
    """Set how many independent codings the chosen stories need. Final stories, and stories
    with more codings than the new number, are skipped (with the reason); a story whose last
    required coding is thereby in is settled at once."""
    wanted = data.coders_required
    if data.incident_ids is not None:
        ids = list(dict.fromkeys(data.incident_ids))
        found = set(session.scalars(select(Incident.id).where(Incident.id.in_(ids))))
        missing = [i for i in ids if i not in found]
        if missing:
            raise NotFound(f"incidents do not exist: {', '.join(map(str, missing))}")
    else:
        f = data.filter
        assert f is not None
        if session.get(Survey, f.survey_id) is None:
            raise NotFound(f"survey {f.survey_id} does not exist")
        conditions: list[ColumnElement[bool]] = [
            Incident.survey_id == f.survey_id,
            Incident.status.not_in(FINAL_STATUSES),
        ]
        if f.valence is not None:
            conditions.append(Incident.valence == f.valence)
        if f.touchpoint is not None:
            conditions.append(Incident.touchpoint == f.touchpoint)
        if f.channel is not None:
            conditions.append(Incident.channel == f.channel)
        if f.submitted_from is not None:
            conditions.append(Incident.submitted_at >= as_utc(f.submitted_from))
        if f.submitted_to is not None:
            conditions.append(Incident.submitted_at < as_utc(f.submitted_to))
        query = select(Incident.id).where(*conditions).order_by(Incident.submitted_at, Incident.id)
        ids = list(session.scalars(query.limit(f.limit) if f.limit else query.limit(100_000)))
    counts = dict(
        session.execute(
            select(Coding.incident_id, func.count(Coding.id))
            .where(Coding.incident_id.in_(ids))
            .group_by(Coding.incident_id)
        ).all()
    )
    updated: list[int] = []
    unchanged: list[int] = []
    skipped: list[SkippedStory] = []
    incidents = {
        i.id: i
        for i in session.scalars(
            select(Incident).where(Incident.id.in_(ids)).order_by(Incident.id).with_for_update()
        )
    }
    for incident_id in ids:
        incident = incidents[incident_id]
        if incident.coders_required == wanted:
            unchanged.append(incident_id)
        elif incident.status in FINAL_STATUSES:
            skipped.append(SkippedStory(incident_id=incident_id, reason=f"{incident.status}"))
        elif counts.get(incident_id, 0) > wanted:
            skipped.append(
                SkippedStory(
                    incident_id=incident_id,
                    reason=f"has {counts[incident_id]} codings already",
                )
            )
        else:
            incident.coders_required = wanted
            updated.append(incident_id)
    session.flush()
    for incident_id in updated:
        if counts.get(incident_id):
            settle(session, incidents[incident_id], actor)
    if updated:
        audit.record(
            session,
            actor,
            "review.double_coding",
            "survey" if data.filter is not None else "incident",
            data.filter.survey_id if data.filter is not None else updated[0],
            after={"coders_required": wanted, "incident_ids": updated},
        )
    return DoubleCodingResult(
        coders_required=wanted, updated=updated, unchanged=unchanged, skipped=skipped
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
