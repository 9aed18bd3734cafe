"""Storing a submitted story (validation shared by the form and the JSON endpoint) and reading."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
import dataclasses
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.config import Settings
from app.errors import AppError, NotFound
from app.i18n import DEFAULT_LANGUAGE, translator
from app.incidents.schemas import IncidentPage, IncidentRead
from app.models import Incident, Invitation, Survey
from app.pagination import decode_cursor, encode_cursor
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
    )
    try:
        with session.begin_nested():
            if invitation is not None and not claim_invitation(session, invitation):
                raise _InvitationTaken
            session.add(incident)
            session.flush()
    except _InvitationTaken:
        return _after_race(session, survey, key)
    except IntegrityError:
        # A concurrent request with the same key or invitation won the race.
        return _after_race(session, survey, key)
    return SubmitResult("stored", incident)


class _InvitationTaken(Exception):
    pass


def _after_race(session: Session, survey: Survey, key: str) -> SubmitResult:
    existing = _by_submission_key(session, survey, key)
    return SubmitResult("duplicate", existing) if existing else SubmitResult("invitation_used")


def _by_submission_key(session: Session, survey: Survey, key: str) -> Incident | None:
    return session.scalar(
        select(Incident).where(Incident.survey_id == survey.id, Incident.submission_key == key)
    )


# Reading ---------------------------------------------------------------------------------------


def to_read(incident: Incident) -> IncidentRead:
    return IncidentRead(
        id=incident.id,
        survey_id=incident.survey_id,
        occurred=incident.occurred_text,
        occurred_on=incident.occurred_on,
        circumstances=incident.circumstances,
        what_happened=incident.what_happened,
        outcome=incident.outcome,
        valence=incident.valence,  # type: ignore[arg-type]
        touchpoint=incident.touchpoint,
        channel=incident.channel,
        language=incident.language,
        attributes=incident.attributes,
        invitation_id=incident.invitation_id,
        submitted_at=incident.submitted_at,
        status=incident.status,
        version=incident.version,
    )


def get_incident(session: Session, incident_id: int) -> Incident:
    incident = session.get(Incident, incident_id)
    if incident is None:
        raise NotFound(f"incident {incident_id} does not exist")
    return incident


def list_incidents(
    session: Session, *, survey_id: int | None, cursor: str | None, limit: int
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
        items=[to_read(r) for r in rows],
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
