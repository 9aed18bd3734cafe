"""Erasing a story: its text, suggestions, codings, spans and memos go in one transaction.

What stays is an audit tombstone without text (who erased which story id, when, why). The
rollup triggers fire on the DELETE in the same transaction, so reports are right the moment it
commits. Models trained on the story are marked (`nlp_models.erased_stories`): they keep what
they learnt until retrained, and the next training cannot see the story (it is gone)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from app import audit
from app.erasure.receipts import receipt_hash
from app.errors import Invalid, NotFound
from app.models import AuditEvent, CodebookVersion, Incident, IncidentCode, Job, NlpModel
from app.models.base import utcnow
from app.webhooks import events as webhooks

if TYPE_CHECKING:
    from app.auth import Principal

ERASE = "incident.erase"
WITHDRAW = "incident.withdraw"
RESPONDENT = "respondent"
# Free text that coders and admins typed about a story (it may quote it): scrubbed from the
# story's earlier audit events, whose structure (codes, statuses, who, when) stays.
_TEXT_KEYS = ("note", "exclusion_reason")
MAX_REASON = 500


@dataclass(frozen=True)
class Erased:
    incident_id: int
    survey_id: int
    models_marked: int
    audit_events_scrubbed: int


def _scrub(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    return {k: (None if k in _TEXT_KEYS and v is not None else v) for k, v in value.items()}


def _mark_models(session: Session, incident_id: int) -> int:
    """Models of the story's codebook trained after its codes were confirmed learnt from it."""
    rows = session.execute(
        select(CodebookVersion.codebook_id, func.min(IncidentCode.confirmed_at))
        .join(CodebookVersion, CodebookVersion.id == IncidentCode.codebook_version_id)
        .where(IncidentCode.incident_id == incident_id)
        .group_by(CodebookVersion.codebook_id)
    ).all()
    marked = 0
    now = utcnow()
    for codebook_id, confirmed_at in rows:
        result = session.execute(
            update(NlpModel)
            .where(NlpModel.codebook_id == codebook_id, NlpModel.created_at >= confirmed_at)
            .values(erased_stories=NlpModel.erased_stories + 1, last_erasure_at=now)
            .execution_options(synchronize_session=False)
        )
        marked += int(getattr(result, "rowcount", 0) or 0)
    return marked


def erase_incident(
    session: Session,
    incident_id: int,
    *,
    reason: str,
    actor: Principal | None,
    action: str = ERASE,
    actor_name: str | None = None,
) -> Erased:
    """Delete the story and everything hanging off it; leave a tombstone. Flushes only: the
    caller's unit of work commits it all at once (or nothing)."""
    reason = reason.strip()
    if not reason:
        raise Invalid("give a reason for erasing the story (it is kept in the audit trail)")
    if len(reason) > MAX_REASON:
        raise Invalid(f"the reason is longer than {MAX_REASON} characters")
    incident = session.get(Incident, incident_id, with_for_update=True)
    if incident is None:
        raise NotFound(f"incident {incident_id} does not exist")
    tombstone = {
        "reason": reason,
        "survey_id": incident.survey_id,
        "source": incident.source,
        "status": incident.status,
        "submitted_at": incident.submitted_at.isoformat(),
        "final_codes": int(
            session.scalar(select(func.count()).where(IncidentCode.incident_id == incident_id)) or 0
        ),
    }
    models = _mark_models(session, incident_id)
    scrubbed = 0
    for event in session.scalars(
        select(AuditEvent).where(
            AuditEvent.entity_type == "incident", AuditEvent.entity_id == str(incident_id)
        )
    ):
        before, after = _scrub(event.before), _scrub(event.after)
        if before != event.before or after != event.after:
            event.before, event.after = before, after
            scrubbed += 1
    session.execute(
        delete(Job)
        .where(Job.subject == f"incident:{incident_id}")
        .execution_options(synchronize_session=False)
    )
    survey_id = incident.survey_id
    # Earlier events of this story still waiting go out first (ids and codes; no text: the
    # story is gone when they are built), then this one.
    webhooks.publish(
        session,
        webhooks.STORY_ERASED,
        {"story_id": incident_id, "survey_id": survey_id, "action": action},
        survey_id=survey_id,
        story_id=incident_id,
    )
    # Suggestions, codings (and their code decisions and spans), leases and assignments go by
    # ON DELETE CASCADE; final codes by the rollup trigger, which also updates the rollups.
    session.delete(incident)
    session.flush()
    audit.record(
        session,
        actor,
        action,
        "incident",
        incident_id,
        after={**tombstone, "models_marked": models},
        actor_name=actor_name,
    )
    session.flush()
    return Erased(incident_id, survey_id, models, scrubbed)


def withdraw(session: Session, code: str, *, survey_id: int | None = None) -> Erased:
    """The respondent's own withdrawal with their receipt code; NotFound for any wrong code."""
    query = select(Incident.id).where(Incident.receipt_hash == receipt_hash(code))
    if survey_id is not None:
        query = query.where(Incident.survey_id == survey_id)
    incident_id = session.scalar(query)
    if incident_id is None:
        raise NotFound("no story has this receipt code (it may have been withdrawn already)")
    return erase_incident(
        session,
        incident_id,
        reason="withdrawn by the respondent",
        actor=None,
        action=WITHDRAW,
        actor_name=RESPONDENT,
    )
