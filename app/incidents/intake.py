"""The story intake: one submission checked and stored in one short transaction.

This is the service's front door (the form and the JSON endpoint), so it is written in plain
SQLAlchemy Core on one connection, with statements built once per dialect: the ORM's unit of
work, and building `.values(...)` anew per request, cost several times the INSERT they wrapped
(bench/ingest.py). A submission:

- checks the story against the survey's rules, kept by this process for `RULES_TTL_SECONDS`
  (so a story costs no survey SELECT; an edit of the questions' choices or consent text
  reaches every process within that time);
- inserts the story only if the survey is open at that moment (`INSERT ... SELECT ... WHERE
  EXISTS (open survey)`: closing a survey takes effect at once, cache or not), with `ON CONFLICT
  DO NOTHING` (a repeated submission key, or an invitation already used, inserts nothing), and
  queues its suggestion job and appends its `story.received` webhook event to the outbox; on
  PostgreSQL story, job and event are one statement (data-modifying CTEs), so a story costs
  the same two round trips (statement, COMMIT) as a bare INSERT;
- stores the respondent's contact, if they left one, encrypted, in `incident_contacts` (only
  then: a story without one costs no extra statement);
- claims the invitation, if any, and commits. On SQLite, which has one writer at a time, the
  submissions that arrive while another story is being written share the next write
  transaction (`GroupCommit`); each is still answered only after its story has committed.

All of it runs inside one call on one worker thread (`DbGate.run`): the transaction never waits
for a thread, an event-loop turn or another request while it holds a lock. No statement touches
a row that another submission also writes (report rollups take delta rows, migration 0006)."""

from __future__ import annotations

import itertools
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    String,
    Table,
    bindparam,
    cast,
    func,
    literal,
    literal_column,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from app.auth import hash_token
from app.cases.crypto import encrypt
from app.config import Settings, get_settings
from app.db import engine_with, write_engine
from app.erasure.receipts import receipt_code, receipt_hash
from app.incidents.redaction import redaction_columns
from app.incidents.service import CleanStory, Intake, check_story, new_submission_key
from app.models import Incident, IncidentContact, Invitation, Job, Survey, WebhookEvent
from app.models.base import utcnow
from app.observability import INTAKE_BATCH
from app.prepared import Prepared
from app.suggestions.queue import SUGGEST
from app.surveys.service import survey_state
from app.webhooks.events import STORY_RECEIVED

incidents: Table = Incident.__table__  # type: ignore[assignment]
invitations: Table = Invitation.__table__  # type: ignore[assignment]
jobs: Table = Job.__table__  # type: ignore[assignment]
contacts: Table = IncidentContact.__table__  # type: ignore[assignment]
surveys: Table = Survey.__table__  # type: ignore[assignment]
webhook_events: Table = WebhookEvent.__table__  # type: ignore[assignment]

RULES_TTL_SECONDS = 2.0
_INCIDENT_COLUMNS = [c.name for c in incidents.columns if c.name != "id"]
_JOB_COLUMNS = [c.name for c in jobs.columns if c.name != "id"]
_EVENT_COLUMNS = [c.name for c in webhook_events.columns if c.name != "id"]


@dataclass(frozen=True)
class SurveyRules:
    """What checking a story needs of its survey (the columns of one small SELECT)."""

    id: int
    status: str
    closes_at: datetime | None
    language: str
    choices: dict[str, Any]
    consent_text: str | None
    contact_question: str | None = None


class RulesCache:
    """Survey rules by slug, as this process last read them (one per app)."""

    def __init__(self, ttl_seconds: float = RULES_TTL_SECONDS) -> None:
        self.ttl = ttl_seconds
        self._rules: dict[str, tuple[float, SurveyRules | None]] = {}
        self._lock = threading.Lock()

    def get(self, conn: Connection, slug: str) -> SurveyRules | None:
        fresh, rules = self.cached(slug)
        if fresh:
            return rules
        now = time.monotonic()
        row = conn.execute(_sql(conn).survey, {"slug": slug}).first()
        rules = SurveyRules(*row) if row is not None else None
        with self._lock:
            if len(self._rules) > 10_000:  # unknown slugs must not grow it without bound
                self._rules.clear()
            self._rules[slug] = (now, rules)
        return rules

    def cached(self, slug: str) -> tuple[bool, SurveyRules | None]:
        """(True, the rules as last read) if that was less than `ttl` ago (None: no such
        survey); (False, None) when they must be read again (`get`)."""
        found = self._rules.get(slug)
        if found is not None and time.monotonic() - found[0] < self.ttl:
            return True, found[1]
        return False, None

    def forget(self, slug: str) -> None:
        """This process changed the survey: read it afresh next time."""
        with self._lock:
            self._rules.pop(slug, None)


@dataclass(frozen=True)
class Stored:
    outcome: str  # stored, duplicate, closed, invitation_invalid, invitation_used, ..._expired
    incident_id: int | None = None
    submitted_at: datetime | None = None
    receipt: str | None = None  # the respondent's withdrawal code (stored and duplicate)


class _Rollback(Exception):
    def __init__(self, outcome: str) -> None:
        self.outcome = outcome


def _param(name: str, column: Any, postgres: bool) -> Any:
    # In `INSERT ... SELECT :a, :b` PostgreSQL must be told each parameter's type (an untyped
    # NULL would be text); SQLite must not be (CAST AS DATETIME would make a date a number).
    value = bindparam(name, type_=column.type)
    return cast(value, column.type) if postgres else value


class _Statements:
    """The intake's statements for one dialect, built once: a statement object keeps its
    compiled form and cache key, so a request only binds parameters."""

    def __init__(self, dialect: str) -> None:
        postgres = dialect == "postgresql"
        insert = postgresql.insert if postgres else sqlite.insert
        self.postgres = postgres
        self.survey = select(
            surveys.c.id,
            surveys.c.status,
            surveys.c.closes_at,
            surveys.c.language,
            surveys.c.choices,
            surveys.c.consent_text,
            surveys.c.contact_question,
        ).where(surveys.c.slug == bindparam("slug"))
        self.state = select(surveys.c.status, surveys.c.closes_at).where(
            surveys.c.id == bindparam("survey_id")
        )
        self.invitation = select(
            invitations.c.id,
            invitations.c.survey_id,
            invitations.c.used_at,
            invitations.c.expires_at,
            invitations.c.attributes,
        ).where(invitations.c.token_hash == bindparam("token_hash"))
        survey_open = (
            select(surveys.c.id)
            .where(
                surveys.c.id == bindparam("open_survey_id"),
                surveys.c.status == "open",
                or_(surveys.c.closes_at.is_(None), surveys.c.closes_at > bindparam("open_at")),
            )
            .exists()
        )
        story_row = select(
            *(_param(name, incidents.c[name], postgres) for name in _INCIDENT_COLUMNS)
        ).where(survey_open)
        self.incident = (
            insert(incidents)
            .from_select(_INCIDENT_COLUMNS, story_row)
            .on_conflict_do_nothing()
            .returning(incidents.c.id, incidents.c.submitted_at, incidents.c.survey_id)
        )
        self.job = insert(jobs).on_conflict_do_nothing(index_elements=["dedupe_key"])
        self.contact = insert(contacts)
        if postgres:
            # Story and suggestion job in one statement.
            new = self.incident.cte("new_incident")
            subject = literal("incident:", String) + cast(new.c.id, String)
            job_values = {
                "kind": literal(SUGGEST, String),
                "payload": func.jsonb_build_object(literal_column("'incident_id'"), new.c.id),
                "subject": subject,
                "dedupe_key": literal(f"{SUGGEST}:", String) + subject,
                "status": literal("queued", String),
                "attempts": literal(0),
                "max_attempts": literal(5),
                "run_after": bindparam("job_at", type_=jobs.c.run_after.type),
                "locked_by": null(),
                "locked_until": null(),
                "last_error": null(),
                "result": null(),
                "created_at": bindparam("job_created", type_=jobs.c.created_at.type),
                "updated_at": bindparam("job_updated", type_=jobs.c.updated_at.type),
            }
            job_row = select(*(job_values[name] for name in _JOB_COLUMNS)).select_from(new)
            new_job = (
                postgresql.insert(jobs)
                .from_select(_JOB_COLUMNS, job_row)
                .on_conflict_do_nothing(index_elements=["dedupe_key"])
                .cte("new_job")
            )
            # ... and its story.received event in the webhook outbox (app.webhooks.events):
            # an append, no read of the subscriptions, no row another submission writes.
            event_values = {
                "event_type": literal(STORY_RECEIVED, String),
                "survey_id": new.c.survey_id,
                "story_id": new.c.id,
                "payload": func.jsonb_build_object(
                    literal_column("'story_id'"),
                    new.c.id,
                    literal_column("'survey_id'"),
                    new.c.survey_id,
                ),
                "created_at": bindparam("job_created", type_=webhook_events.c.created_at.type),
                "dispatched_at": null(),
            }
            event_row = select(*(event_values[name] for name in _EVENT_COLUMNS)).select_from(new)
            new_event = (
                postgresql.insert(webhook_events)
                .from_select(_EVENT_COLUMNS, event_row)
                .cte("new_event")
            )
            self.incident_and_job = (
                select(new.c.id, new.c.submitted_at).add_cte(new_job).add_cte(new_event)
            )
        self.event = insert(webhook_events)
        self.by_key = select(incidents.c.id, incidents.c.submitted_at).where(
            incidents.c.survey_id == bindparam("survey_id"),
            incidents.c.submission_key == bindparam("key"),
        )
        self.claim = (
            update(invitations)
            .where(invitations.c.id == bindparam("invitation_id"), invitations.c.used_at.is_(None))
            .values(used_at=bindparam("now"))
        )


_statements: dict[str, _Statements] = {}


def _sql(conn: Connection) -> _Statements:
    name = conn.dialect.name
    found = _statements.get(name)
    if found is None:
        found = _statements[name] = _Statements(name)
    return found


class _SQLiteWrites:
    """SQLite's three intake INSERTs as `Prepared` statements: they run inside the write lock,
    where SQLAlchemy's per-execution Python held back every other writer (app.prepared)."""

    def __init__(self, sql: _Statements, dialect: Dialect) -> None:
        self.incident = Prepared(sql.incident, dialect)
        self.job = Prepared(sql.job, dialect, column_keys=_JOB_COLUMNS)
        self.event = Prepared(sql.event, dialect, column_keys=_EVENT_COLUMNS)


_sqlite_writes: weakref.WeakKeyDictionary[Dialect, _SQLiteWrites] = weakref.WeakKeyDictionary()


def _writes(conn: Connection, sql: _Statements) -> _SQLiteWrites:
    # Per dialect object, not per name: the processors come from the engine's dialect (its JSON
    # serializer).
    found = _sqlite_writes.get(conn.dialect)
    if found is None:
        found = _sqlite_writes[conn.dialect] = _SQLiteWrites(sql, conn.dialect)
    return found


def _autocommit(engine: Engine) -> Engine:
    """The same engine and pool, its connections in autocommit (PostgreSQL: no BEGIN/COMMIT
    round trips around a statement that is a transaction of its own)."""
    return engine_with(engine, isolation_level="AUTOCOMMIT")


def insert_story(
    conn: Connection,
    survey: SurveyRules,
    story: CleanStory,
    *,
    submission_key: str | None,
    invitation_token: str | None,
    secret_key: str | None = None,
    settings: Settings | None = None,
    redacted: dict[str, Any] | None = None,
) -> Stored:
    """Store one checked story on `conn` (inside the caller's transaction, which a refused
    invitation must roll back: the caller sees `_Rollback`). With `secret_key` the story gets
    its withdrawal receipt (an HMAC of the submission: no query, the same code on a retry).
    `redacted`: the answers' `redaction_columns`, when the caller made them before the
    transaction (else they are made here)."""
    sql = _sql(conn)
    key = submission_key or new_submission_key()
    receipt = receipt_code(secret_key, survey.id, key) if secret_key else None
    invitation_id: int | None = None
    attributes: dict[str, Any] = {}
    if invitation_token:
        invitation = conn.execute(
            sql.invitation, {"token_hash": hash_token(invitation_token)}
        ).first()
        if invitation is None or invitation.survey_id != survey.id:
            return Stored("invitation_invalid")
        if invitation.used_at is not None:
            return _stored_before(conn, survey, key, receipt) or Stored("invitation_used")
        if invitation.expires_at is not None and invitation.expires_at <= utcnow():
            return Stored("invitation_expired")
        invitation_id = invitation.id
        attributes = dict(invitation.attributes or {})

    now = utcnow()
    answers = story.answers
    values = {
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
        "source": "invitation" if invitation_id is not None else "form",
        "consent": "given" if survey.consent_text else "not_asked",
        "import_id": None,
        "receipt_hash": receipt_hash(receipt) if receipt else None,
        # Patterns only (e-mail, phone, ...): a configured NER pipeline is the worker's to run,
        # and researchers read the story once it has (app.incidents.redaction.readable).
        "redacted_with": None,
        **(redacted if redacted is not None else redaction_columns(answers)),
        "open_survey_id": survey.id,
        "open_at": now,
    }
    if sql.postgres:
        values |= {
            "job_at": now,
            "job_created": now,
            "job_updated": now,
        }
        row: Sequence[Any] | None = conn.execute(sql.incident_and_job, values).first()
        writes = None
    else:
        writes = _writes(conn, sql)
        row = writes.incident.first(conn, values)
    if row is None:
        # The key was stored before (a refresh, a retry), the survey closed a moment ago, or
        # the invitation was taken meanwhile.
        return _stored_before(conn, survey, key, receipt) or _why_refused(
            conn, survey, invitation_id
        )
    incident_id, submitted_at = row[0], row[1]
    if invitation_id is not None:
        claimed = conn.execute(sql.claim, {"invitation_id": invitation_id, "now": now})
        if claimed.rowcount != 1:
            raise _Rollback("invitation_used")
    if story.contact is not None:
        kind, contact = story.contact
        conn.execute(
            sql.contact,
            {
                "incident_id": incident_id,
                "survey_id": survey.id,
                "kind": kind,
                "ciphertext": encrypt(settings or get_settings(), contact),
                "created_at": now,
            },
        )
    if writes is not None:  # SQLite: the job and the event (PostgreSQL wrote them above)
        writes.job.execute(
            conn,
            {
                "kind": SUGGEST,
                "payload": {"incident_id": incident_id},
                "subject": f"incident:{incident_id}",
                "dedupe_key": f"{SUGGEST}:incident:{incident_id}",
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
        writes.event.execute(
            conn,
            {
                "event_type": STORY_RECEIVED,
                "survey_id": survey.id,
                "story_id": incident_id,
                "payload": {"story_id": incident_id, "survey_id": survey.id},
                "created_at": now,
                "dispatched_at": None,
            },
        )
    return Stored("stored", incident_id, submitted_at, receipt)


def _stored_before(
    conn: Connection, survey: SurveyRules, key: str, receipt: str | None
) -> Stored | None:
    existing = conn.execute(_sql(conn).by_key, {"survey_id": survey.id, "key": key}).first()
    return Stored("duplicate", existing.id, existing.submitted_at, receipt) if existing else None


def _why_refused(conn: Connection, survey: SurveyRules, invitation_id: int | None) -> Stored:
    state = conn.execute(_sql(conn).state, {"survey_id": survey.id}).first()
    if state is None or survey_state(state) != "open":
        return Stored("closed" if state is not None and state.status == "closed" else "gone")
    return Stored("invitation_used" if invitation_id is not None else "gone")


def rules_of(survey: Survey) -> SurveyRules:
    return SurveyRules(
        survey.id,
        survey.status,
        survey.closes_at,
        survey.language,
        survey.choices,
        survey.consent_text,
        survey.contact_question,
    )


@dataclass(frozen=True)
class SubmitResult:
    outcome: str
    incident: Incident | None = None
    receipt: str | None = None


def store_story(
    session: Session,
    survey: Survey,
    story: CleanStory,
    *,
    submission_key: str | None,
    invitation_token: str | None,
    secret_key: str | None = None,
    settings: Settings | None = None,
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
                secret_key=secret_key,
                settings=settings,
            )
    except _Rollback as refused:
        return SubmitResult(refused.outcome)
    incident = session.get(Incident, stored.incident_id) if stored.incident_id else None
    return SubmitResult(stored.outcome, incident, stored.receipt)


@dataclass(frozen=True)
class Submission:
    """A checked story on its way into the database (what `insert_story` takes besides the
    connection)."""

    rules: SurveyRules
    story: CleanStory
    redacted: dict[str, Any]
    submission_key: str | None
    invitation_token: str | None


def _insert(conn: Connection, submission: Submission, settings: Settings) -> Stored:
    return insert_story(
        conn,
        submission.rules,
        submission.story,
        submission_key=submission.submission_key,
        invitation_token=submission.invitation_token,
        secret_key=settings.secret_key,
        settings=settings,
        redacted=submission.redacted,
    )


def store_alone(engine: Engine, submission: Submission, settings: Settings) -> Stored:
    """One story in a transaction of its own. On PostgreSQL a story without an invitation or a
    contact is one statement (story, job and outbox event in one INSERT ... RETURNING, atomic
    by itself): run in autocommit it is one round trip instead of three (BEGIN, the INSERT,
    COMMIT), less work for both sides."""
    single = (
        engine.dialect.name == "postgresql"
        and submission.invitation_token is None
        and submission.story.contact is None
    )
    try:
        with (_autocommit(engine) if single else write_engine(engine)).begin() as conn:
            return _insert(conn, submission, settings)
    except _Rollback as refused:
        return Stored(refused.outcome)


class _Waiting:
    __slots__ = ("error", "ready", "settings", "stored", "submission")

    def __init__(self, submission: Submission, settings: Settings) -> None:
        self.submission = submission
        self.settings = settings
        self.ready = threading.Event()
        self.stored: Stored | None = None
        self.error: BaseException | None = None


class GroupCommit:
    """SQLite's group commit: the submissions that arrive while another is being written are
    stored together, in the next write transaction, and each answers once that has committed.

    SQLite has one writer at a time, and a story's own INSERTs cost less than the transaction
    around them (BEGIN IMMEDIATE, the COMMIT's WAL frames and the checkpoints they bring, the
    connection's checkout and the write lock's hand-over): in one thread, ~960 us a story alone
    against ~450 us in batches of 10 to 40 (bench/README.md, Ingest, tenth session). A story
    that arrives while nothing is being written is written at once, alone: no wait is added to
    gather a batch.

    The submissions queue in arrival order (LevelDB's writer queue): the one at the front takes
    the write lock, then writes everything queued by then (at most `MAX_BATCH`), commits, wakes
    those it wrote, and wakes the new front. A respondent is still answered only after their
    story is committed. If the batch's transaction fails (a refused invitation rolls back what
    its story wrote; a database error), nothing of it stays and every story of it is written
    again alone, so that each gets the answer it would have got by itself."""

    MAX_BATCH = 64

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[_Waiting] = deque()

    def store(self, engine: Engine, submission: Submission, settings: Settings) -> Stored:
        me = _Waiting(submission, settings)
        with self._lock:
            self._queue.append(me)
            leading = len(self._queue) == 1
        if not leading:
            me.ready.wait()  # written by the front, or now the front itself
        if me.stored is None and me.error is None:
            self._write(engine)
        if me.error is not None:
            raise me.error
        assert me.stored is not None
        return me.stored

    def _front(self) -> list[_Waiting]:
        with self._lock:
            return list(itertools.islice(self._queue, self.MAX_BATCH))

    def _write(self, engine: Engine) -> None:
        batch = self._front()
        began = False
        try:
            try:
                with write_engine(engine).begin() as conn:
                    began = True
                    batch = self._front()  # and those who queued while it waited for the lock
                    for waiting in batch:
                        waiting.stored = _insert(conn, waiting.submission, waiting.settings)
            except Exception as error:
                for waiting in batch:
                    waiting.stored = None
                if not began:  # no write lock: those queued meanwhile waited for it as long
                    batch = self._front()
                    for waiting in batch:
                        waiting.error = error
                elif len(batch) == 1:
                    if isinstance(error, _Rollback):
                        batch[0].stored = Stored(error.outcome)
                    else:
                        batch[0].error = error
                else:
                    for waiting in batch:
                        try:
                            waiting.stored = store_alone(
                                engine, waiting.submission, waiting.settings
                            )
                        except Exception as alone:
                            waiting.error = alone
            else:
                INTAKE_BATCH.observe(len(batch))
        except BaseException as error:  # not an Exception: nobody of the batch is answered
            for waiting in batch:
                waiting.stored, waiting.error = None, error
            raise
        finally:
            with self._lock:
                for _ in batch:
                    self._queue.popleft()
                front = self._queue[0] if self._queue else None
            for waiting in batch:
                if waiting.stored is None and waiting.error is None:
                    waiting.error = RuntimeError("the story was not written")
                waiting.ready.set()
            if front is not None:
                front.ready.set()


_group_commits: weakref.WeakKeyDictionary[Engine, GroupCommit] = weakref.WeakKeyDictionary()
_group_commits_lock = threading.Lock()


def group_commit(engine: Engine) -> GroupCommit:
    """The engine's group commit (one per engine: its queue is the process's writers'). It
    holds no reference to the engine, so that a disposed engine is not kept alive by it."""
    found = _group_commits.get(engine)
    if found is None:
        with _group_commits_lock:
            found = _group_commits.setdefault(engine, GroupCommit())
    return found


def receive_story(
    engine: Engine,
    settings: Settings,
    rules_cache: RulesCache,
    slug: str,
    answers: dict[str, Any],
    consent: bool,
    *,
    submission_key: str | None,
    invitation_token: str | None,
) -> Intake:
    """One submission, whole: check the story, store it, commit.

    Run it in a single worker-thread call (`DbGate.run`). `Intake.language` says in which
    language the survey answers; the form loads the full survey itself when it must re-render."""
    # Everything but the INSERTs happens before the write transaction: on SQLite writers take
    # turns (one process-wide lock, app.db), so the checks and the pattern redaction of one
    # story must not hold back the next one's insert. The rules may be a couple of seconds old
    # either way (RulesCache); the insert itself refuses a survey closed meanwhile.
    fresh, rules = rules_cache.cached(slug)
    if not fresh:
        with engine.connect() as conn:  # a reader: no write lock
            rules = rules_cache.get(conn, slug)
    if rules is None or survey_state(rules) == "not_open":
        return Intake("no_survey", language=rules.language if rules else None)
    if survey_state(rules) == "closed":
        return Intake("closed", language=rules.language)
    story, errors = check_story(rules, answers, consent, settings)
    if story is None:
        return Intake("invalid", errors=errors, language=rules.language)
    submission = Submission(
        rules, story, redaction_columns(story.answers), submission_key, invitation_token
    )
    if engine.dialect.name == "sqlite":
        stored = group_commit(engine).store(engine, submission, settings)
    else:
        stored = store_alone(engine, submission, settings)
    if stored.outcome in ("closed", "gone"):
        rules_cache.forget(slug)
        return Intake(
            "closed" if stored.outcome == "closed" else "no_survey", language=rules.language
        )
    return Intake(
        stored.outcome,  # type: ignore[arg-type]
        language=rules.language,
        submitted_at=stored.submitted_at,
        incident_id=stored.incident_id,
        receipt=stored.receipt,
    )
