"""Reading the append-only audit trail (writing it is app.audit.record; nothing edits it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from app.incidents.service import as_utc
from app.models import AuditEvent
from app.pagination import decode_cursor, encode_cursor
from app.reviews.schemas import AuditEventRead, AuditPage


@dataclass(frozen=True)
class AuditFilters:
    entity_type: str | None = None
    entity_id: str | None = None
    actor: str | None = None
    action: str | None = None
    at_from: datetime | None = None
    at_to: datetime | None = None


def _conditions(filters: AuditFilters) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if filters.entity_type is not None:
        conditions.append(AuditEvent.entity_type == filters.entity_type)
    if filters.entity_id is not None:
        conditions.append(AuditEvent.entity_id == filters.entity_id)
    if filters.actor is not None:
        conditions.append(AuditEvent.actor_name == filters.actor)
    if filters.action is not None:
        conditions.append(AuditEvent.action == filters.action)
    if filters.at_from is not None:
        conditions.append(AuditEvent.at >= as_utc(filters.at_from))
    if filters.at_to is not None:
        conditions.append(AuditEvent.at < as_utc(filters.at_to))
    return conditions


def list_events(
    session: Session, filters: AuditFilters, *, cursor: str | None, limit: int
) -> AuditPage:
    """Newest first, in keyset pages (the cursor carries the last id seen)."""
    query = select(AuditEvent).where(*_conditions(filters)).order_by(AuditEvent.id.desc())
    before = decode_cursor(cursor)
    if before is not None:
        query = query.where(AuditEvent.id < before)
    rows = list(session.scalars(query.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return AuditPage(
        items=[AuditEventRead.model_validate(row) for row in rows],
        next_cursor=encode_cursor(rows[-1].id) if more and rows else None,
    )
