"""The story intake: one submission read, checked and stored in one short transaction.

This is the service's front door (the form and the JSON endpoint), so it is written in plain
SQLAlchemy Core on one connection: the ORM's unit of work cost several times the INSERT it
wrapped (bench/ingest.py). A submission reads the survey, checks the story, inserts it with
`ON CONFLICT DO NOTHING` (a repeated submission key, or an invitation already used, inserts
nothing), claims the invitation, queues its suggestion job and commits, all inside one call
that runs on one worker thread (`DbGate.run`): the transaction never waits for a thread, an
event-loop turn or another request while it holds a lock. No statement here touches a row that
another submission also writes: report rollups take delta rows (migration 0006)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Table, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.auth import hash_token
from app.config import Settings
from app.db import write_engine
from app.incidents.redaction import redaction_columns
from app.incidents.service import CleanStory, Intake, check_story, new_submission_key
from app.models import Incident, Invitation, Job, Survey
from app.models.base import utcnow
from app.suggestions.queue import SUGGEST
from app.surveys.service import survey_state

incidents: Table = Incident.__table__  # type: ignore[assignment]
invitations: Table = Invitation.__table__  # type: ignore[assignment]
jobs: Table = Job.__table__  # type: ignore[assignment]
surveys: Table = Survey.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class SurveyRules:
    """What the intake needs of a survey (the columns of one small SELECT)."""

    id: int
    status: str
    closes_at: datetime | None
    language: str
    choices: dict[str, Any]
    consent_text: str | None


@dataclass(frozen=True)
class Stored:
    outcome: str  # stored, duplicate, invitation_invalid, invitation_used, invitation_expired
    incident_id: int | None = None
    submitted_at: datetime | None = None


class _Rollback(Exception):
    def __init__(self, outcome: str) -> None:
        self.outcome = outcome


class _Statements:
    """The intake's statements, built once per dialect: a statement object keeps its compiled
    form and cache key, so a request only binds parameters (building `.values(...)` anew cost
    more than the INSERT itself)."""

    def __init__(self, dialect: str) -> None:
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        self.survey = select(
            surveys.c.id,
            surveys.c.status,
            surveys.c.closes_at,
            surveys.c.language,
            surveys.c.choices,
            surveys.c.consent_text,
        ).where(surveys.c.slug == bindparam("slug"))
        self.invitation = select(
            invitations.c.id,
            invitations.c.survey_id,
            invitations.c.used_at,
            invitations.c.expires_at,
            invitations.c.attributes,
        ).where(invitations.c.token_hash == bindparam("token_hash"))
        # Every column given (no Python-side defaults to fill in): the values dict is the row.
        self.incident = (
            insert(incidents)
            .on_conflict_do_nothing()
            .returning(incidents.c.id, incidents.c.submitted_at)
        )
        self.by_key = select(incidents.c.id, incidents.c.submitted_at).where(
            incidents.c.survey_id == bindparam("survey_id"),
            incidents.c.submission_key == bindparam("key"),
        )
        self.claim = (
            update(invitations)
            .where(invitations.c.id == bindparam("invitation_id"), invitations.c.used_at.is_(None))
            .values(used_at=bindparam("now"))
        )
        self.job = insert(jobs).on_conflict_do_nothing(index_elements=["dedupe_key"])


_statements: dict[str, _Statements] = {}


def _sql(conn: Connection) -> _Statements:
    name = conn.dialect.name
    found = _statements.get(name)
    if found is None:
        found = _statements[name] = _Statements(name)
    return found


def load_rules(conn: Connection, slug: str) -> SurveyRules | None:
    row = conn.execute(_sql(conn).survey, {"slug": slug}).first()
    return SurveyRules(*row) if row is not None else None


def insert_story(
    conn: Connection,
    survey: SurveyRules,
    story: CleanStory,
    *,
    submission_key: str | None,
    invitation_token: str | None,
) -> Stored:
    """Store one checked story on `conn` (inside the caller's transaction, which a refused
    invitation must roll back: the caller sees `_Rollback`)."""
    sql = _sql(conn)
    key = submission_key or new_submission_key()
    invitation_id: int | None = None
    attributes: dict[str, Any] = {}
    if invitation_token:
        invitation = conn.execute(
            sql.invitation, {"token_hash": hash_token(invitation_token)}
        ).first()
        if invitation is None or invitation.survey_id != survey.id:
            return Stored("invitation_invalid")
        if invitation.used_at is not None:
            return _stored_before(conn, survey, key) or Stored("invitation_used")
        if invitation.expires_at is not None and invitation.expires_at <= utcnow():
            return Stored("invitation_expired")
        invitation_id = invitation.id
        attributes = dict(invitation.attributes or {})

    now = utcnow()
    answers = story.answers
    row = conn.execute(
        sql.incident,
        {
            "survey_id": survey.id,
            "invitation_id": invitation_id,
            "submission_key": key,
            "occurred_text": answers["occurred"],
            "occurred_on": story.occurred_on,
            "circumstances": answers["circumstances"],
            "what_happened": answers["what_happened"] or "",
            "outcome": answers["outcome"],
            "valence": answers["valence"] or "",
            "touchpoint": answers["touchpoint"],
            "channel": answers["channel"],
            "language": survey.language,
            "attributes": attributes,
            "submitted_at": now,
            "status": "new",
            "coders_required": None,
            "exclusion_reason": None,
            "finalized_at": None,
            "version": 1,
            **redaction_columns(answers),
        },
    ).first()
    if row is None:
        # The key was stored before (a refresh, a retry), or the invitation was taken meanwhile.
        return _stored_before(conn, survey, key) or Stored("invitation_used")
    if invitation_id is not None:
        claimed = conn.execute(sql.claim, {"invitation_id": invitation_id, "now": now})
        if claimed.rowcount != 1:
            raise _Rollback("invitation_used")
    conn.execute(
        sql.job,
        {
            "kind": SUGGEST,
            "payload": {"incident_id": row.id},
            "subject": f"incident:{row.id}",
            "dedupe_key": f"{SUGGEST}:incident:{row.id}",
            "status": "queued",
            "attempts": 0,
            "max_attempts": 5,
            "run_after": now,
            "locked_by": None,
            "locked_until": None,
            "last_error": None,
            "result": None,
            "created_at": now,
            "updated_at": now,
        },
    )
    return Stored("stored", row.id, row.submitted_at)


def _stored_before(conn: Connection, survey: SurveyRules, key: str) -> Stored | None:
    existing = conn.execute(_sql(conn).by_key, {"survey_id": survey.id, "key": key}).first()
    return Stored("duplicate", existing.id, existing.submitted_at) if existing else None


def rules_of(survey: Survey) -> SurveyRules:
    return SurveyRules(
        survey.id,
        survey.status,
        survey.closes_at,
        survey.language,
        survey.choices,
        survey.consent_text,
    )


@dataclass(frozen=True)
class SubmitResult:
    outcome: str
    incident: Incident | None = None


def store_story(
    session: Session,
    survey: Survey,
    story: CleanStory,
    *,
    submission_key: str | None,
    invitation_token: str | None,
) -> SubmitResult:
    """`insert_story` inside a session's transaction (a savepoint, so that a refused invitation
    undoes only this story), for tests and tools that already hold a session."""
    try:
        with session.begin_nested():
            stored = insert_story(
                session.connection(),
                rules_of(survey),
                story,
                submission_key=submission_key,
                invitation_token=invitation_token,
            )
    except _Rollback as refused:
        return SubmitResult(refused.outcome)
    incident = session.get(Incident, stored.incident_id) if stored.incident_id else None
    return SubmitResult(stored.outcome, incident)


def receive_story(
    engine: Engine,
    settings: Settings,
    slug: str,
    answers: dict[str, Any],
    consent: bool,
    *,
    submission_key: str | None,
    invitation_token: str | None,
) -> Intake:
    """One submission, whole: read the survey, check the story, store it, commit.

    Run it in a single worker-thread call (`DbGate.run`). `Intake.survey_id` and `language`
    say which survey answered; the form loads the full survey itself when it must re-render."""
    rules: SurveyRules | None = None
    try:
        with write_engine(engine).begin() as conn:
            rules = load_rules(conn, slug)
            if rules is None or survey_state(rules) == "not_open":  # type: ignore[arg-type]
                return Intake("no_survey", language=rules.language if rules else None)
            if survey_state(rules) == "closed":  # type: ignore[arg-type]
                return Intake("closed", language=rules.language)
            story, errors = check_story(rules, answers, consent, settings)
            if story is None:
                return Intake("invalid", errors=errors, language=rules.language)
            stored = insert_story(
                conn,
                rules,
                story,
                submission_key=submission_key,
                invitation_token=invitation_token,
            )
    except _Rollback as refused:
        assert rules is not None
        return Intake(refused.outcome, language=rules.language)  # type: ignore[arg-type]
    return Intake(
        stored.outcome,  # type: ignore[arg-type]
        language=rules.language,
        submitted_at=stored.submitted_at,
        incident_id=stored.incident_id,
    )
