"""Storing a submitted story (validation shared by the form and the JSON endpoint) and reading."""

from __future__ import annotations

import dataclasses
import re
import secrets
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol, cast

from sqlalchemy import (
    ColumnElement,
    SQLColumnExpression,
    String,
    Table,
    and_,
    bindparam,
    exists,
    literal,
    or_,
    select,
)
from sqlalchemy import cast as cast_to
from sqlalchemy.orm import Session

from app.config import Settings, get_settings
from app.errors import AppError, Forbidden, NotFound
from app.i18n import DEFAULT_LANGUAGE, translator
from app.incidents.redaction import (
    REDACTED_FIELDS,
    TextViews,
    gated_answers,
    original_answers,
    required_redaction,
    text_views,
)
from app.incidents.schemas import (
    CodeDecisionRead,
    CodingRead,
    FinalCodeRead,
    IncidentPage,
    IncidentRead,
    SpanRead,
    SuggestionJobRead,
    SuggestionRead,
)
from app.models import (
    Coding,
    CodingCode,
    CodingSpan,
    Incident,
    IncidentCode,
    Job,
    Suggestion,
    User,
)
from app.pagination import keyset_page
from app.suggestions.queue import SUGGEST
from nlp import redact

if TYPE_CHECKING:
    from app.auth import Principal

ANSWER_FIELDS = ("occurred", "circumstances", "what_happened", "outcome")
# Text a database cannot store as typed: NUL, and UTF-16 surrogates (a JSON "\\ud800" that
# pairs with nothing). Refused with a message, never silently altered.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
CHOICE_FIELDS = ("valence", "touchpoint", "channel")
VALENCES = ("satisfying", "dissatisfying")
_ISO_DATE = re.compile(r"^\s*(\d{4})-(\d{2})-(\d{2})\s*$")


@dataclass(frozen=True)
class FieldError:
    """A problem with one answer; `code` is a key under `errors.` in the locale files."""

    field: str
    code: str
    params: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class CleanStory:
    answers: dict[str, str | None]
    occurred_on: date | None
    # The respondent's contact, when the survey asked and they agreed: ("email" | "phone", text).
    contact: tuple[str, str] | None = None


# Fields of a submission that carry the contact (form and JSON), never an answer.
CONTACT_FIELDS = ("contact_ok", "contact")
MAX_CONTACT_CHARS = 254
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s.]{2,}$")
_PHONE = re.compile(r"^\+?[0-9 ()./-]{7,30}$")


def parse_contact(value: str) -> tuple[str, str] | None:
    """("email" | "phone", the contact as typed, trimmed), or None when it is neither."""
    text = value.strip()
    if len(text) > MAX_CONTACT_CHARS:
        return None
    if _EMAIL.match(text):
        return "email", text
    if _PHONE.match(text) and 7 <= sum(c.isdigit() for c in text) <= 15:
        return "phone", text
    return None


def parse_occurred_on(text: str | None) -> date | None:
    """The date of "when did it happen" when the answer is an ISO date; free text stays text."""
    match = _ISO_DATE.match(text or "")
    if not match:
        return None
    try:
        return date(*(int(g) for g in match.groups()))
    except ValueError:
        return None


class StoryRules(Protocol):
    """What checking a story needs of its survey (a Survey row, or the intake's SurveyRules)."""

    @property
    def choices(self) -> dict[str, Any]: ...

    @property
    def consent_text(self) -> str | None: ...

    @property
    def contact_question(self) -> str | None: ...


def check_story(
    survey: StoryRules, answers: Mapping[str, Any], consent: bool, settings: Settings
) -> tuple[CleanStory | None, list[FieldError]]:
    """Check a story against the survey; text is kept exactly as typed (only "" becomes None)."""
    errors: list[FieldError] = []
    clean: dict[str, str | None] = {}
    for name in (*ANSWER_FIELDS, *CHOICE_FIELDS):
        value = answers.get(name)
        clean[name] = value if isinstance(value, str) and value.strip() else None
        if isinstance(value, str) and _UNSTORABLE.search(value):
            errors.append(FieldError(name, "invalid_characters"))
        elif isinstance(value, str) and len(value) > settings.max_answer_chars:
            errors.append(
                FieldError(
                    name, "too_long", {"max": settings.max_answer_chars, "length": len(value)}
                )
            )
    if clean["what_happened"] is None:
        errors.append(FieldError("what_happened", "story_required"))
    if clean["valence"] is None:
        errors.append(FieldError("valence", "required"))
    elif clean["valence"] not in VALENCES:
        errors.append(FieldError("valence", "invalid_choice"))
    for name, options in (
        ("touchpoint", survey.choices.get("touchpoints", [])),
        ("channel", survey.choices.get("channels", [])),
    ):
        if clean[name] is not None and clean[name] not in options:
            errors.append(FieldError(name, "invalid_choice"))
    if survey.consent_text and not consent:
        errors.append(FieldError("consent", "consent_required"))
    contact: tuple[str, str] | None = None
    if survey.contact_question and answers.get("contact_ok") in (True, "yes"):
        typed = answers.get("contact")
        if not isinstance(typed, str) or not typed.strip():
            errors.append(FieldError("contact", "contact_required"))
        else:
            contact = parse_contact(typed)
            if contact is None:
                errors.append(FieldError("contact", "contact_invalid"))
    if errors:
        return None, errors
    return CleanStory(clean, parse_occurred_on(clean["occurred"]), contact), []


IntakeOutcome = Literal[
    "stored",
    "duplicate",
    "invalid",
    "no_survey",
    "closed",
    "invitation_invalid",
    "invitation_used",
    "invitation_expired",
]


@dataclass(frozen=True)
class Intake:
    """What became of one submission (app.incidents.intake): for the JSON endpoint's answer and
    the form's page. `language` is the survey's (None when there is no such survey); `errors`
    are the field errors of an invalid story."""

    outcome: IntakeOutcome
    errors: list[FieldError] = dataclasses.field(default_factory=list)
    language: str | None = None
    submitted_at: datetime | None = None
    incident_id: int | None = None
    # The respondent's withdrawal code (stored and duplicate outcomes).
    receipt: str | None = None


def new_submission_key() -> str:
    return secrets.token_urlsafe(18)


# Reading ---------------------------------------------------------------------------------------


View = Literal["original", "redacted"]
StatusFilter = Literal["new", "in_review", "adjudication", "coded", "excluded"]


def resolve_view(user: Principal, asked: View | None) -> View:
    """Admins read the original text by default, everyone else the redacted text."""
    if asked == "original" and user.role != "admin":
        raise Forbidden("only admins read the original, unredacted text")
    if asked is not None:
        return asked
    return "original" if user.role == "admin" else "redacted"


# Reading statements, built once (every story read runs them): building a statement per call
# cost more Python than the database needs to run it (bench/review_throughput.py).
_CODINGS_OF = (
    select(Coding, User.name)
    .join(User, User.id == Coding.coder_id)
    .where(Coding.incident_id.in_(bindparam("ids", expanding=True)))
    .order_by(Coding.id)
)
_DECISIONS_OF = (
    select(CodingCode)
    .where(CodingCode.coding_id.in_(bindparam("coding_ids", expanding=True)))
    .order_by(CodingCode.id)
)
_SPANS_OF = (
    select(CodingSpan)
    .join(CodingCode, CodingCode.id == CodingSpan.coding_code_id)
    .where(CodingCode.coding_id.in_(bindparam("coding_ids", expanding=True)))
    .order_by(CodingSpan.id)
)
# to_reads' reads as Core statements of the columns it uses, run on the session's connection:
# an ORM entity load of one row costs several times its SQL (the coding path's hand-out,
# bench/README.md, Coding path).
_suggestions_table = cast(Table, Suggestion.__table__)
_suggestion_rows = _suggestions_table.c


class SuggestionRow(NamedTuple):
    """A story's suggestion row as to_reads reads it."""

    incident_id: int
    exclusion: dict[str, Any] | None
    items: list[dict[str, Any]]
    codebook_version_id: int
    model_id: int | None
    created_at: datetime


# The columns to_reads uses besides the story's id (by key: `.items` is the collection's method).
_SUGGESTION_FIELDS = SuggestionRow._fields[1:]
_SUGGESTIONS_OF = select(
    _suggestion_rows.incident_id, *(_suggestion_rows[name] for name in _SUGGESTION_FIELDS)
).where(_suggestion_rows.incident_id.in_(bindparam("ids", expanding=True)))
_final_rows = cast(Table, IncidentCode.__table__).c
_FINAL_CODES_OF = (
    select(
        _final_rows.incident_id,
        _final_rows.code,
        _final_rows.source,
        _final_rows.codebook_version_id,
        _final_rows.confirmed_by,
        _final_rows.confirmed_at,
    )
    .where(_final_rows.incident_id.in_(bindparam("ids", expanding=True)))
    .order_by(_final_rows.id)
)
_job_rows = cast(Table, Job.__table__).c
_OPEN_SUGGEST_JOBS_OF = (
    select(_job_rows.subject, _job_rows.status, _job_rows.attempts, _job_rows.last_error)
    .where(
        _job_rows.kind == SUGGEST,
        _job_rows.subject.in_(bindparam("subjects", expanding=True)),
        _job_rows.status != "done",
    )
    .order_by(_job_rows.id)
)


# What to_reads reads besides the suggestions, as EXISTS columns a caller can add to a
# statement it runs anyway (the review queue's lease or candidate query), for the story given
# as the bound parameters `incident_id` and `job_subject` ("incident:<id>"), or as the column
# `story` of that statement: to_reads then skips the reads that would find nothing
# (`nothing_of`), a round trip each on PostgreSQL and a Core execution each on SQLite.
def anything_to_read(story: Any = None) -> list[Any]:
    subject: Any
    if story is None:
        story, subject = bindparam("incident_id"), bindparam("job_subject")
    else:
        subject = literal("incident:") + cast_to(story, String)
    return [
        exists().where(Coding.incident_id == story).label("codings"),
        exists().where(IncidentCode.incident_id == story).label("final_codes"),
        exists()
        .where(
            Job.kind == SUGGEST,
            Job.subject == subject,
            Job.status != "done",
        )
        .label("suggestion_jobs"),
    ]


READ_KINDS = ("codings", "final_codes", "suggestion_jobs")


def suggestion_columns(story: Any = None) -> list[Any]:
    """The story's suggestion row as labelled scalar subqueries (`suggestion_<column>`), for a
    statement that reads the story anyway (the review queue's candidate query on SQLite, its
    lease on PostgreSQL): with `suggestion_row_of`, to_reads then has no read of its own to
    run (`suggestions_read`). `story`: the story's id column, else the bound `incident_id`."""
    if story is None:
        story = bindparam("incident_id")
    return [
        select(_suggestion_rows[name])
        .where(_suggestion_rows.incident_id == story)
        # Never correlated to a suggestions table of the enclosing statement (the queue's
        # least-certain candidates join it).
        .correlate_except(_suggestions_table)
        .scalar_subquery()
        .label(f"suggestion_{name}")
        for name in _SUGGESTION_FIELDS
    ]


def suggestion_row_of(incident_id: int, row: Any) -> SuggestionRow | None:
    """The suggestion row read by `suggestion_columns` (None: the story has none)."""
    found = row._mapping
    if found["suggestion_items"] is None:  # items is NOT NULL: no row
        return None
    return SuggestionRow(incident_id, *(found[f"suggestion_{name}"] for name in _SUGGESTION_FIELDS))


def load_codings(
    session: Session,
    incident_ids: Sequence[int],
    *,
    view: View = "redacted",
    revisions: tuple[int, dict[int, int]] | None = None,
) -> dict[int, list[CodingRead]]:
    """Every coding of the given stories with its code decisions and their spans (offsets and
    text in `view`), in four queries. `revisions` (coder id, dict): fills the dict with the
    revision of that coder's coding of each story (for `etag_for`)."""
    found: dict[int, list[CodingRead]] = defaultdict(list)
    if not incident_ids:
        return found
    rows = session.execute(_CODINGS_OF, {"ids": list(incident_ids)}).all()
    decisions: dict[int, list[CodingCode]] = defaultdict(list)
    spans: dict[int, list[CodingSpan]] = defaultdict(list)
    if rows:
        coding_ids = [coding.id for coding, _ in rows]
        for decision in session.scalars(_DECISIONS_OF, {"coding_ids": coding_ids}):
            decisions[decision.coding_id].append(decision)
        for span in session.scalars(_SPANS_OF, {"coding_ids": coding_ids}):
            spans[span.coding_code_id].append(span)
    views: dict[int, TextViews] = {}

    def span_reads(incident_id: int, decision: CodingCode) -> list[SpanRead]:
        if not spans[decision.id]:
            return []
        if incident_id not in views:
            views[incident_id] = text_views(get_incident(session, incident_id))
        return [
            read_span(views[incident_id], view, s.field, s.start, s.end) for s in spans[decision.id]
        ]

    for coding, coder in rows:
        if revisions is not None and coding.coder_id == revisions[0]:
            revisions[1][coding.incident_id] = coding.revision
        made = decisions[coding.id]
        found[coding.incident_id].append(
            CodingRead(
                id=coding.id,
                incident_id=coding.incident_id,
                coder=coder,
                codebook_version_id=coding.codebook_version_id,
                codes=[
                    CodeDecisionRead(
                        code=d.code,
                        origin="suggestion" if d.decision == "accepted" else "manual",
                        proposed=d.proposal_id is not None,
                        proposal_id=d.proposal_id,
                        spans=span_reads(coding.incident_id, d),
                    )
                    for d in made
                    if d.decision != "rejected"
                ],
                rejected_suggestions=[d.code for d in made if d.decision == "rejected"],
                excluded=coding.excluded,
                exclusion_reason=coding.exclusion_reason,
                no_code_applies=coding.no_code_applies,
                note=coding.note,
                history=coding.history,
                created_at=coding.created_at,
                updated_at=coding.updated_at,
            )
        )
    return found


def read_span(views: TextViews, view: View, field: str, start: int, end: int) -> SpanRead:
    """A stored span (original offsets) as a reader in `view` reads it."""
    start, end = views.from_original(view, field, start, end)
    text = views.text(view, field) or ""
    return SpanRead(field=field, start=start, end=end, text=text[start:end])


def visible_codings(
    incident: Incident, codings: list[CodingRead], viewer: Principal | None
) -> list[CodingRead]:
    """Blind double coding: until every required coding is in, a coder sees only their own
    (and nobody without a role-checked identity sees any); admins always see all."""
    if viewer is not None and viewer.role == "admin":
        return codings
    required = incident.coders_required
    if required is not None and len(codings) >= required:
        return codings
    if viewer is None:
        return []
    return [c for c in codings if c.coder == viewer.name]


def visible_status(incident: Incident, codings: list[CodingRead], viewer: Principal | None) -> str:
    """Blind double coding, for the status too: a researcher who has not coded the story yet
    sees `new` while other codings are in but not all of them (else `in_review` would tell them
    that the other coder has answered)."""
    if incident.status != "in_review" or (viewer is not None and viewer.role == "admin"):
        return incident.status
    if viewer is not None and any(c.coder == viewer.name for c in codings):
        return incident.status
    return "new"


def _status_condition(status: str, viewer: Principal | None) -> ColumnElement[bool]:
    """The status filter as `visible_status` shows statuses: for a researcher, a story in review
    that they have not coded is `new`."""
    if viewer is None or viewer.role == "admin" or status not in ("new", "in_review"):
        return Incident.status == status
    mine = exists().where(
        Coding.incident_id == Incident.id,
        Coding.coder_id == viewer.id,
    )
    if status == "in_review":
        return and_(Incident.status == "in_review", mine)
    return or_(Incident.status == "new", and_(Incident.status == "in_review", ~mine))


def _redacted_attributes(
    attributes: dict[str, Any], memo: dict[str, str] | None = None
) -> dict[str, Any]:
    """Attributes can come from imported columns (a free comment, an e-mail address): their
    text gets the same pattern redaction as the answers before researchers read it. `memo`
    remembers redacted values across stories (exports: a segment repeats a million times)."""
    if memo is None:
        return {k: redact(v).text if isinstance(v, str) else v for k, v in attributes.items()}
    out: dict[str, Any] = {}
    for k, v in attributes.items():
        if isinstance(v, str):
            done = memo.get(v)
            if done is None:
                done = redact(v).text
                if len(memo) < 100_000:
                    memo[v] = done
            out[k] = done
        else:
            out[k] = v
    return out


redacted_attributes = _redacted_attributes


def to_reads(
    session: Session,
    incidents: Sequence[Incident],
    view: View,
    viewer: Principal | None = None,
    *,
    redaction: str | Literal["configured"] | None = "configured",
    revisions: dict[int, int] | None = None,
    nothing_of: Collection[str] = (),
    suggestions_read: Mapping[int, SuggestionRow | None] | None = None,
) -> list[IncidentRead]:
    """Stories as researchers (redacted) or admins (original) read them, with suggestions,
    final codes, the codings `viewer` may see and any pending or failed suggestion job, loaded
    in bulk (no N+1). `revisions`, when given, gets the revision of the viewer's own coding of
    each story they coded (what `etag` reads, without a statement of its own). `nothing_of`:
    the READ_KINDS the caller knows none of the stories has (`anything_to_read`): not read.
    `suggestions_read`: the suggestion rows (None: none) of stories the caller read them for
    (`suggestion_columns`): not read again.

    `redaction` is the redaction marker the redacted view requires ("configured": the one of
    the process settings' NER pipeline): a story not yet redacted with it is served without its
    text, evidence or suggestions, flagged `redaction_pending`."""
    if redaction == "configured":
        redaction = required_redaction(get_settings().nlp_pipeline)
    ids = [i.id for i in incidents]
    exclusions: dict[int, dict[str, Any]] = {}
    suggestions: dict[int, list[SuggestionRead]] = defaultdict(list)
    codes: dict[int, list[FinalCodeRead]] = defaultdict(list)
    jobs: dict[int, SuggestionJobRead] = {}
    codings = (
        load_codings(
            session,
            ids,
            view=view,
            revisions=(viewer.id, revisions) if revisions is not None and viewer else None,
        )
        if "codings" not in nothing_of
        else defaultdict(list)
    )
    if ids:
        conn = session.connection()
        known = suggestions_read or {}
        unread = [i for i in ids if i not in known]
        rows: list[Any] = [known[i] for i in ids if known.get(i) is not None]
        if unread:
            rows += conn.execute(_SUGGESTIONS_OF, {"ids": unread}).all()
        for row in rows:
            if row.exclusion:
                exclusions[row.incident_id] = row.exclusion
            suggestions[row.incident_id] = [
                SuggestionRead(
                    **item,
                    codebook_version_id=row.codebook_version_id,
                    model_id=row.model_id,
                    created_at=row.created_at,
                )
                for item in row.items
            ]
        final = () if "final_codes" in nothing_of else conn.execute(_FINAL_CODES_OF, {"ids": ids})
        for code in final:
            codes[code.incident_id].append(FinalCodeRead.model_validate(code, from_attributes=True))
        subjects = {f"incident:{i}": i for i in ids}
        jobs_of = (
            ()
            if "suggestion_jobs" in nothing_of
            else conn.execute(_OPEN_SUGGEST_JOBS_OF, {"subjects": list(subjects)})
        )
        for job in jobs_of:
            jobs[subjects[job.subject or ""]] = SuggestionJobRead(
                status=job.status,  # type: ignore[arg-type]
                attempts=job.attempts,
                last_error=job.last_error,
            )
    reads = []
    for incident in incidents:
        if view == "original":
            answers, pending = original_answers(incident), False
        else:
            answers, pending = gated_answers(incident, redaction)
        reads.append(
            IncidentRead(
                id=incident.id,
                survey_id=incident.survey_id,
                occurred=answers["occurred"],
                occurred_on=incident.occurred_on,
                circumstances=answers["circumstances"],
                what_happened=answers["what_happened"] or "",
                outcome=answers["outcome"],
                valence=incident.valence,  # type: ignore[arg-type]
                touchpoint=incident.touchpoint,
                channel=incident.channel,
                language=incident.language,
                attributes=incident.attributes
                if view == "original"
                else ({} if pending else _redacted_attributes(incident.attributes)),
                invitation_id=incident.invitation_id,
                submitted_at=incident.submitted_at,
                status=visible_status(incident, codings[incident.id], viewer),
                version=incident.version,
                coders_required=incident.coders_required,
                exclusion_reason=incident.exclusion_reason,
                finalized_at=incident.finalized_at,
                view=view,
                redaction_pending=pending,
                suggestions=[] if pending else suggestions[incident.id],
                exclusion_suggestion=None if pending else exclusions.get(incident.id),
                suggestion_job=jobs.get(incident.id),
                final_codes=codes[incident.id],
                codings=visible_codings(incident, codings[incident.id], viewer),
            )
        )
    return reads


def get_incident(session: Session, incident_id: int, *, for_update: bool = False) -> Incident:
    """The story; `for_update` locks its row until the transaction ends (PostgreSQL)."""
    incident = session.get(Incident, incident_id, with_for_update=for_update or None)
    if incident is None:
        raise NotFound(f"incident {incident_id} does not exist")
    return incident


_REVISION = select(Coding.__table__.c.revision).where(
    Coding.__table__.c.incident_id == bindparam("incident_id"),
    Coding.__table__.c.coder_id == bindparam("coder_id"),
)


def etag(session: Session, incident: Incident, user_id: int) -> str:
    """The story's ETag as this caller sees it: the story's version (bumped when its status or
    final codes change) and the revision of the caller's own coding. Another coder's save does
    not change it, so blind double coding neither refuses the second coder nor tells them that
    the first has answered; the caller's own concurrent writes (two tabs) still conflict."""
    revision = (
        session.connection()
        .execute(_REVISION, {"incident_id": incident.id, "coder_id": user_id})
        .scalar()
    )
    return etag_for(incident, revision)


def etag_for(incident: Incident, revision: int | None) -> str:
    """`etag` when the revision of the caller's coding is known (None: no coding)."""
    return f'"{incident.version}.{revision or 0}"'


def as_utc(moment: datetime) -> datetime:
    """Query parameters without a zone are read as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


@dataclass(frozen=True)
class IncidentFilters:
    """What `GET /api/v1/incidents` narrows by; `q` searches the text the caller may read."""

    survey_id: int | None = None
    status: StatusFilter | None = None
    code: str | None = None
    valence: Literal["satisfying", "dissatisfying", "neutral", "unknown"] | None = None
    touchpoint: str | None = None
    channel: str | None = None
    submitted_from: datetime | None = None
    submitted_to: datetime | None = None
    q: str | None = None


def _text_columns(view: View) -> list[SQLColumnExpression[Any]]:
    if view == "original":
        return [
            Incident.occurred_text,
            Incident.circumstances,
            Incident.what_happened,
            Incident.outcome,
        ]
    # Each redacted answer extracted as text (JSON_EXTRACT on SQLite, ->> on PostgreSQL), so
    # that neither the JSON keys nor its escaping take part in the match.
    return [Incident.redacted[field].as_string() for field in REDACTED_FIELDS]


def filter_conditions(
    filters: IncidentFilters, view: View, viewer: Principal | None = None
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if filters.survey_id is not None:
        conditions.append(Incident.survey_id == filters.survey_id)
    if filters.status is not None:
        conditions.append(_status_condition(filters.status, viewer))
    if filters.code is not None:
        conditions.append(
            exists().where(
                IncidentCode.incident_id == Incident.id, IncidentCode.code == filters.code
            )
        )
    if filters.valence is not None:
        conditions.append(Incident.valence == filters.valence)
    if filters.touchpoint is not None:
        conditions.append(Incident.touchpoint == filters.touchpoint)
    if filters.channel is not None:
        conditions.append(Incident.channel == filters.channel)
    if filters.submitted_from is not None:
        conditions.append(Incident.submitted_at >= as_utc(filters.submitted_from))
    if filters.submitted_to is not None:
        conditions.append(Incident.submitted_at < as_utc(filters.submitted_to))
    if filters.q:
        conditions.append(
            or_(*(column.icontains(filters.q, autoescape=True) for column in _text_columns(view)))
        )
    return conditions


def list_incidents(
    session: Session,
    *,
    filters: IncidentFilters | None = None,
    survey_id: int | None = None,
    cursor: str | None = None,
    limit: int,
    view: View,
    viewer: Principal | None = None,
    redaction: str | Literal["configured"] | None = "configured",
) -> IncidentPage:
    """One keyset page of stories (by id) matching `filters` (see `to_reads` for
    `redaction`). A text search in the redacted view skips stories still awaiting redaction:
    a match on a name would tell which story holds it."""
    filters = filters or IncidentFilters(survey_id=survey_id)
    if redaction == "configured":
        redaction = required_redaction(get_settings().nlp_pipeline)
    conditions = filter_conditions(filters, view, viewer)
    if filters.q and view == "redacted" and redaction is not None:
        conditions.append(Incident.redacted_with == redaction)
    query = select(Incident).where(*conditions)
    rows, next_cursor = keyset_page(session, query, Incident.id, cursor, limit)
    return IncidentPage(
        items=to_reads(session, rows, view, viewer, redaction=redaction), next_cursor=next_cursor
    )


class SubmissionInvalid(AppError):
    """A JSON submission that breaks the survey's rules: 422 with one entry per field."""

    status = 422
    title = "Validation failed"
    type_slug = "validation"

    def __init__(self, errors: list[FieldError]) -> None:
        t = translator(DEFAULT_LANGUAGE)
        items = [
            {"loc": ["body", e.field], "msg": t(f"errors.{e.code}", **e.params), "type": e.code}
            for e in errors
        ]
        super().__init__(
            "Invalid input: " + ", ".join(e.field for e in errors), extra={"errors": items}
        )
