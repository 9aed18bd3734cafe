"""Browser sessions: the cookie's random token is looked up by its SHA-256; CSRF tokens are
derived from it. Kept free of app.auth so that the auth dependencies can use it."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from app.config import Settings
from app.models import User, WebSession
from app.models.base import utcnow

SESSION_COOKIE = "cit_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
# A session's last_seen_at is written at most this often (one write a minute, not per click).
TOUCH_EVERY = timedelta(seconds=60)


def hash_session_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# Lookup --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenSession:
    user_id: int
    name: str
    role: str
    session_id: int
    needs_touch: bool


def find_session(session: Session, token: str, settings: Settings) -> OpenSession | None:
    """The signed-in person behind a session cookie, unless the session ended (idle too long,
    past its lifetime, signed out, the person revoked)."""
    row = session.execute(
        select(User.id, User.name, User.role, WebSession.id, WebSession.last_seen_at)
        .join(WebSession, WebSession.user_id == User.id)
        .where(
            WebSession.token_hash == hash_session_token(token),
            WebSession.expires_at > utcnow(),
            User.disabled_at.is_(None),
        )
    ).first()
    if row is None:
        return None
    now = utcnow()
    last_seen: datetime = row[4]
    if now - last_seen > timedelta(minutes=settings.session_idle_minutes):
        return None
    return OpenSession(row[0], row[1], row[2], row[3], now - last_seen > TOUCH_EVERY)


def touch_session(session: Session, session_id: int) -> None:
    session.execute(
        update(WebSession).where(WebSession.id == session_id).values(last_seen_at=utcnow())
    )


def end_session(session: Session, token: str) -> None:
    session.execute(delete(WebSession).where(WebSession.token_hash == hash_session_token(token)))


def csrf_token(settings: Settings, session_token: str) -> str:
    """The CSRF token of a session: an HMAC of its cookie, so no page of another site can know
    it, and no table needs to hold it."""
    return hmac.new(
        settings.secret_key.encode(), f"session-csrf:{session_token}".encode(), hashlib.sha256
    ).hexdigest()


def csrf_matches(settings: Settings, session_token: str, submitted: str | None) -> bool:
    return bool(submitted) and hmac.compare_digest(
        csrf_token(settings, session_token), submitted or ""
    )
