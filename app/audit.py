"""Writing the append-only audit trail; there is deliberately no update or delete here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from app.models import AuditEvent

if TYPE_CHECKING:
    from app.auth import Principal

CLI_ACTOR = "cli"


def record(
    session: Session,
    actor: Principal | None,
    action: str,
    entity_type: str,
    entity_id: int | str,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    actor_name: str | None = None,
) -> None:
    """`actor_name` names an actor without a principal or token (a respondent withdrawing their
    story, the worker acting for whoever queued the job); without either the actor is the
    command line."""
    session.add(
        AuditEvent(
            actor_id=actor.id if actor else None,
            actor_name=actor.name if actor else (actor_name or CLI_ACTOR),
            action=action,
            entity_type=entity_type,
            entity_id=str(entity_id),
            before=before,
            after=after,
        )
    )
