"""Notifications to researchers about their own work (a proposed code decided, a coding that
needs revising): written by the services that decide, read on progress and coding reads."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from app.auth import Principal
from app.errors import NotFound
from app.models import Notification
from app.models.base import utcnow
from app.reviews.schemas import NotificationRead

UNREAD_LIMIT = 50


def notify(
    session: Session,
    user_id: int,
    kind: str,
    message: str,
    *,
    incident_id: int | None = None,
    payload: dict[str, Any] | None = None,
) -> None:
    session.add(
        Notification(
            user_id=user_id,
            kind=kind,
            incident_id=incident_id,
            message=message,
            payload=payload or {},
        )
    )


_UNREAD = select(Notification).where(
    Notification.user_id == bindparam("user_id"), Notification.read_at.is_(None)
)
# Built once (every saved coding answers with them).
_UNREAD_BY_STORY = {
    False: _UNREAD.order_by(Notification.id.desc()).limit(UNREAD_LIMIT),
    True: _UNREAD.where(Notification.incident_id == bindparam("incident_id"))
    .order_by(Notification.id.desc())
    .limit(UNREAD_LIMIT),
}


def unread(
    session: Session, user_id: int, *, incident_id: int | None = None
) -> list[NotificationRead]:
    """The person's unread notifications, newest first (about one story, when given)."""
    params = {"user_id": user_id, "incident_id": incident_id}
    rows = session.scalars(_UNREAD_BY_STORY[incident_id is not None], params)
    return [NotificationRead.model_validate(row) for row in rows]


def list_all(session: Session, user: Principal, *, limit: int = 100) -> list[NotificationRead]:
    rows = session.scalars(
        select(Notification)
        .where(Notification.user_id == user.id)
        .order_by(Notification.id.desc())
        .limit(limit)
    )
    return [NotificationRead.model_validate(row) for row in rows]


def mark_read(session: Session, user: Principal, notification_id: int) -> NotificationRead:
    row = session.get(Notification, notification_id)
    if row is None or row.user_id != user.id:
        raise NotFound(f"you have no notification {notification_id}")
    if row.read_at is None:
        session.execute(
            update(Notification)
            .where(Notification.id == notification_id)
            .values(read_at=utcnow())
            .execution_options(synchronize_session="fetch")
        )
        session.refresh(row)
    return NotificationRead.model_validate(row)
