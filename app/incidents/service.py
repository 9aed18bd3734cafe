"""Storing a submitted story (validation shared by the form and the JSON endpoint) and reading."""

from __future__ import annotations

import dataclasses
import re
import secrets
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.config import Settings
from app.errors import AppError, NotFound
from app.i18n import DEFAULT_LANGUAGE, translator
from app.incidents.redaction import original_answers, redacted_answers, redaction_columns
from app.incidents.schemas import (
    FinalCodeRead,
    IncidentPage,
    IncidentRead,
    SuggestionJobRead,
    SuggestionRead,
)
from app.models import Incident, IncidentCode, Invitation, Job, Suggestion, Survey
from app.pagination import decode_cursor, encode_cursor
from app.suggestions.queue import SUGGEST, enqueue_suggestions
from app.surveys.service import claim_invitation, find_invitation, invitation_status

ANSWER_FIELDS = ("occurred", "circumstances", "what_happened", "outcome")
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


def check_story(
    survey: Survey, answers: Mapping[str, Any], consent: bool, settings: Settings
) -> tuple[CleanStory | None, list[FieldError]]:
    """Check a story against the survey; text is kept exactly as typed (only "" becomes None)."""
    errors: list[FieldError] = []
    clean: dict[str, str | None] = {}
    for name in (*ANSWER_FIELDS, *CHOICE_FIELDS):
        value = answers.get(name)
        clean[name] = value if isinstance(value, str) and value.strip() else None
        if isinstance(value, str) and len(value) > settings.max_answer_chars:
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
    if errors:
        return None, errors
    match = _ISO_DATE.match(clean["occurred"] or "")
    occurred_on = None
    if match:
        try:
            occurred_on = date(*(int(g) for g in match.groups()))
        except ValueError:
            occurred_on = None
    return CleanStory(clean, occurred_on), []


SubmitOutcome = Literal[
    "stored", "duplicate", "invitation_invalid", "invitation_used", "invitation_expired"
]


@dataclass(frozen=True)
class SubmitResult:
    outcome: SubmitOutcome
    incident: Incident | None = None


def new_submission_key() -> str:
    return secrets.token_urlsafe(18)


def store_story(
    session: Session,
    survey: Survey,
    story: CleanStory,
    *,
    submission_key: str | None,
    invitation_token: str | None,
) -> SubmitResult:
    """Store one story; a repeated submission key (refresh, double click) stores nothing new."""
    key = submission_key or new_submission_key()
    existing = _by_submission_key(session, survey, key)
    if existing is not None:
        return SubmitResult("duplicate", existing)

    invitation: Invitation | None = None
    if invitation_token:
        invitation = find_invitation(session, invitation_token)
        if invitation is None or invitation.survey_id != survey.id:
            return SubmitResult("invitation_invalid")
        status = invitation_status(invitation)
        if status != "unused":
            return SubmitResult("invitation_used" if status == "used" else "invitation_expired")

    incident = Incident(
        survey_id=survey.id,
        invitation_id=invitation.id if invitation else None,
        submission_key=key,
        occurred_text=story.answers["occurred"],
        occurred_on=story.occurred_on,
        circumstances=story.answers["circumstances"],
        what_happened=story.answers["what_happened"] or "",
        outcome=story.answers["outcome"],
        valence=story.answers["valence"] or "",
        touchpoint=story.answers["touchpoint"],
        channel=story.answers["channel"],
        language=survey.language,
        attributes=dict(invitation.attributes) if invitation else {},
        **redaction_columns(story.answers),
    )
    try:
        with session.begin_nested():
            if invitation is not None and not claim_invitation(session, invitation):
                raise _InvitationTaken
            session.add(incident)
            session.flush()
    except (_InvitationTaken, IntegrityError):
        # A concurrent request with the same key or the same invitation got there first.
        existing = _by_submission_key(session, survey, key)
        if existing is not None:
            return SubmitResult("duplicate", existing)
        if invitation is not None:
            return SubmitResult("invitation_used")
        raise
    enqueue_suggestions(session, [incident.id])
    return SubmitResult("stored", incident)


class _InvitationTaken(Exception):
    pass


def _by_submission_key(session: Session, survey: Survey, key: str) -> Incident | None:
    return session.scalar(
        select(Incident).where(Incident.survey_id == survey.id, Incident.submission_key == key)
    )


# Reading ---------------------------------------------------------------------------------------


View = Literal["original", "redacted"]


def to_reads(session: Session, incidents: Sequence[Incident], view: View) -> list[IncidentRead]:
    """Stories as researchers (redacted) or admins (original) read them, with suggestions,
    final codes and any pending or failed suggestion job, loaded in bulk (no N+1)."""
    ids = [i.id for i in incidents]
    suggestions: dict[int, list[SuggestionRead]] = defaultdict(list)
    codes: dict[int, list[FinalCodeRead]] = defaultdict(list)
    jobs: dict[int, SuggestionJobRead] = {}
    if ids:
        for row in session.scalars(select(Suggestion).where(Suggestion.incident_id.in_(ids))):
            suggestions[row.incident_id] = [
                SuggestionRead(
                    **item,
                    codebook_version_id=row.codebook_version_id,
                    model_id=row.model_id,
                    created_at=row.created_at,
                )
                for item in row.items
            ]
        for code in session.scalars(
            select(IncidentCode).where(IncidentCode.incident_id.in_(ids)).order_by(IncidentCode.id)
        ):
            codes[code.incident_id].append(FinalCodeRead.model_validate(code, from_attributes=True))
        subjects = {f"incident:{i}": i for i in ids}
        for job in session.scalars(
            select(Job)
            .where(Job.kind == SUGGEST, Job.subject.in_(subjects), Job.status != "done")
            .order_by(Job.id)
        ):
            jobs[subjects[job.subject or ""]] = SuggestionJobRead(
                status=job.status,  # type: ignore[arg-type]
                attempts=job.attempts,
                last_error=job.last_error,
            )
    reads = []
    for incident in incidents:
        answers = original_answers(incident) if view == "original" else redacted_answers(incident)
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
                attributes=incident.attributes,
                invitation_id=incident.invitation_id,
                submitted_at=incident.submitted_at,
                status=incident.status,
                version=incident.version,
                view=view,
                suggestions=suggestions[incident.id],
                suggestion_job=jobs.get(incident.id),
                final_codes=codes[incident.id],
            )
        )
    return reads


def get_incident(session: Session, incident_id: int) -> Incident:
    incident = session.get(Incident, incident_id)
    if incident is None:
        raise NotFound(f"incident {incident_id} does not exist")
    return incident


def list_incidents(
    session: Session, *, survey_id: int | None, cursor: str | None, limit: int, view: View
) -> IncidentPage:
    query = select(Incident).order_by(Incident.id)
    if survey_id is not None:
        query = query.where(Incident.survey_id == survey_id)
    after = decode_cursor(cursor)
    if after is not None:
        query = query.where(Incident.id > after)
    rows = list(session.scalars(query.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return IncidentPage(
        items=to_reads(session, rows, view),
        next_cursor=encode_cursor(rows[-1].id) if more and rows else None,
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
