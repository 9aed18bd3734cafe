"""People who sign in: creating them, one-time set-password links, Argon2id passwords, sign-in
(rate limited, constant time, one generic refusal), server-side sessions and revocation."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from app import audit
from app.accounts.schemas import PasswordLinkRead, PersonRead
from app.accounts.sessions import hash_session_token
from app.auth import Principal, hash_token
from app.config import Settings
from app.errors import Conflict, Forbidden, Invalid, NotFound, TooManyRequests
from app.models import ROLES, ApiToken, PasswordLink, User, WebSession
from app.models.base import utcnow

log = logging.getLogger(__name__)

PASSWORD_MIN_CHARS = 10
PASSWORD_MAX_CHARS = 200
WRONG_NAME_OR_PASSWORD = "Wrong name or password."

# argon2-cffi's defaults are Argon2id with RFC 9106's second recommended profile
# (t=3, m=64 MiB, p=4): about 50 ms per check on this machine.
_hasher = PasswordHasher()
_dummy_hash: str | None = None


def _dummy() -> str:
    """A hash to verify against when the name is unknown, so both cases take the same time."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = _hasher.hash(secrets.token_urlsafe(16))
    return _dummy_hash


# People ----------------------------------------------------------------------------------------


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 100:
        raise Invalid("name must be 1 to 100 characters")
    if any(ord(ch) < 32 for ch in name):
        raise Invalid("name must not contain control characters")
    return name


def person_read(session: Session, user: User) -> PersonRead:
    now = utcnow()
    sessions = session.scalar(
        select(func.count(WebSession.id)).where(
            WebSession.user_id == user.id, WebSession.expires_at > now
        )
    )
    tokens = session.scalar(
        select(func.count(ApiToken.id)).where(
            ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None)
        )
    )
    return PersonRead(
        id=user.id,
        name=user.name,
        role=user.role,
        created_at=user.created_at,
        has_password=user.password_hash is not None,
        disabled_at=user.disabled_at,
        active_sessions=sessions or 0 if user.disabled_at is None else 0,
        active_tokens=tokens or 0 if user.disabled_at is None else 0,
    )


def list_people(session: Session) -> list[PersonRead]:
    """Everyone, with their open sessions and tokens counted in two grouped queries."""
    now = utcnow()
    sessions = dict(
        session.execute(
            select(WebSession.user_id, func.count(WebSession.id))
            .where(WebSession.expires_at > now)
            .group_by(WebSession.user_id)
        ).all()
    )
    tokens = dict(
        session.execute(
            select(ApiToken.user_id, func.count(ApiToken.id))
            .where(ApiToken.revoked_at.is_(None))
            .group_by(ApiToken.user_id)
        ).all()
    )
    return [
        PersonRead(
            id=u.id,
            name=u.name,
            role=u.role,
            created_at=u.created_at,
            has_password=u.password_hash is not None,
            disabled_at=u.disabled_at,
            active_sessions=0 if u.disabled_at else sessions.get(u.id, 0),
            active_tokens=0 if u.disabled_at else tokens.get(u.id, 0),
        )
        for u in session.scalars(select(User).order_by(User.name))
    ]


def get_person(session: Session, person_id: int) -> User:
    user = session.get(User, person_id)
    if user is None:
        raise NotFound(f"there is nobody with id {person_id}")
    return user


def find_person(session: Session, name: str) -> User:
    user = session.scalar(select(User).where(User.name == name.strip()))
    if user is None:
        raise NotFound(f"there is nobody called {name!r}")
    return user


def create_person(
    session: Session, *, name: str, role: str, actor: Principal | None, settings: Settings
) -> tuple[User, PasswordLinkRead]:
    """A new person and their first set-password link (shown once)."""
    if role not in ROLES:
        raise Invalid(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    name = _check_name(name)
    if session.scalar(select(User.id).where(User.name == name)) is not None:
        raise Conflict(f"{name!r} exists already; send them a new set-password link instead")
    user = User(name=name, role=role)
    session.add(user)
    session.flush()
    audit.record(
        session, actor, "person.create", "user", user.id, after={"name": name, "role": role}
    )
    return user, issue_password_link(session, user, actor=actor, settings=settings)


def issue_password_link(
    session: Session, user: User, *, actor: Principal | None, settings: Settings
) -> PasswordLinkRead:
    """A one-time link to set (or reset) the person's password; older unused links stop
    working."""
    if user.disabled_at is not None:
        raise Conflict(f"{user.name!r} was revoked; a revoked person gets no link")
    session.execute(
        delete(PasswordLink).where(PasswordLink.user_id == user.id, PasswordLink.used_at.is_(None))
    )
    token = secrets.token_urlsafe(32)
    expires = utcnow() + timedelta(hours=settings.password_link_hours)
    session.add(
        PasswordLink(
            user_id=user.id,
            token_hash=hash_token(token),
            created_by=actor.name if actor else audit.CLI_ACTOR,
            expires_at=expires,
        )
    )
    session.flush()
    audit.record(
        session,
        actor,
        "person.password_link",
        "user",
        user.id,
        after={"name": user.name, "expires_at": expires.isoformat()},
    )
    url = f"{settings.public_base_url.rstrip('/')}/account/password/{token}"
    return PasswordLinkRead(url=url, expires_at=expires)


def revoke_person(session: Session, user: User, actor: Principal | None) -> None:
    """Sign the person out everywhere at once: sessions ended, tokens and links revoked."""
    if actor is not None and actor.id == user.id:
        raise Forbidden("you cannot revoke yourself; ask another admin")
    if user.disabled_at is not None:
        return
    now = utcnow()
    user.disabled_at = now
    ended = _count(session, WebSession.id, WebSession.user_id == user.id)
    session.execute(delete(WebSession).where(WebSession.user_id == user.id))
    live_tokens = (ApiToken.user_id == user.id) & ApiToken.revoked_at.is_(None)
    revoked = _count(session, ApiToken.id, live_tokens)
    session.execute(update(ApiToken).where(live_tokens).values(revoked_at=now))
    session.execute(
        delete(PasswordLink).where(PasswordLink.user_id == user.id, PasswordLink.used_at.is_(None))
    )
    session.flush()
    audit.record(
        session,
        actor,
        "person.revoke",
        "user",
        user.id,
        after={"name": user.name, "sessions_ended": ended, "tokens_revoked": revoked},
    )


def _count(session: Session, column: Any, condition: Any) -> int:
    return session.scalar(select(func.count(column)).where(condition)) or 0


# Passwords -------------------------------------------------------------------------------------


def password_problems(name: str, password: str, confirm: str) -> list[str]:
    problems = []
    if len(password) < PASSWORD_MIN_CHARS:
        problems.append(f"Use at least {PASSWORD_MIN_CHARS} characters.")
    if len(password) > PASSWORD_MAX_CHARS:
        problems.append(f"Use at most {PASSWORD_MAX_CHARS} characters.")
    if password.strip().lower() == name.strip().lower():
        problems.append("Do not use your name as your password.")
    if password != confirm:
        problems.append("The two passwords are not the same.")
    return problems


def link_owner(session: Session, token: str) -> User | None:
    """The person a set-password link belongs to, while it is unused and unexpired."""
    row = session.execute(
        select(PasswordLink, User)
        .join(User, User.id == PasswordLink.user_id)
        .where(
            PasswordLink.token_hash == hash_token(token),
            PasswordLink.used_at.is_(None),
            PasswordLink.expires_at > utcnow(),
            User.disabled_at.is_(None),
        )
    ).first()
    return row[1] if row else None


def set_password(session: Session, token: str, password: str, confirm: str) -> User:
    """Use a set-password link: store the Argon2id hash, spend the link, end the person's other
    sessions (a reset locks out whoever knew the old password)."""
    user = link_owner(session, token)
    if user is None:
        raise Invalid("this link has expired or has been used; ask an admin for a new one")
    problems = password_problems(user.name, password, confirm)
    if problems:
        raise Invalid(" ".join(problems))
    user.password_hash = _hasher.hash(password)
    session.execute(
        update(PasswordLink)
        .where(PasswordLink.token_hash == hash_token(token))
        .values(used_at=utcnow())
    )
    session.execute(delete(WebSession).where(WebSession.user_id == user.id))
    session.flush()
    audit.record(session, None, "person.password_set", "user", user.id, after={"name": user.name})
    return user


# Sign-in ---------------------------------------------------------------------------------------


class FailureLimiter:
    """Failed sign-ins per key (an account, a client address) in a sliding window, kept in this
    process; a key at its limit is refused until its oldest failure leaves the window."""

    def __init__(
        self, limit: int, window_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window_seconds
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        failures = self._failures.get(key)
        if failures is None:
            return deque()
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[key]
        return failures

    def retry_after(self, key: str) -> int | None:
        """Seconds until the key may try again, or None when it may now."""
        now = self._clock()
        with self._lock:
            failures = self._recent(key, now)
            if len(failures) < self.limit:
                return None
            return max(1, int(failures[0] + self.window - now) + 1)

    def fail(self, key: str) -> None:
        with self._lock:
            self._failures.setdefault(key, deque()).append(self._clock())

    def forget(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)


@dataclass
class SignInLimits:
    per_account: FailureLimiter
    per_client: FailureLimiter

    @classmethod
    def from_settings(cls, settings: Settings) -> SignInLimits:
        window = settings.signin_window_seconds
        return cls(
            FailureLimiter(settings.signin_failures_per_account, window),
            FailureLimiter(settings.signin_failures_per_client, window),
        )


class SignInFailed(Invalid):
    status = 401
    title = "Unauthorized"
    type_slug = "unauthorized"


def sign_in(
    session: Session,
    *,
    name: str,
    password: str,
    client: str,
    limits: SignInLimits,
    settings: Settings,
) -> tuple[Principal, str]:
    """Check the name and password and open a session; returns the cookie value (shown once).

    The refusal never tells whether the name exists; an unknown name costs the same Argon2
    check as a wrong password."""
    account_key = f"account:{name.strip().lower()}"
    client_key = f"client:{client}"
    waits = [
        w
        for w in (
            limits.per_account.retry_after(account_key),
            limits.per_client.retry_after(client_key),
        )
        if w
    ]
    if waits:
        minutes = max(1, round(max(waits) / 60))
        raise TooManyRequests(
            f"Too many failed sign-ins. Try again in about {minutes} minute"
            f"{'s' if minutes != 1 else ''}.",
            headers={"Retry-After": str(max(waits))},
        )
    user = session.scalar(select(User).where(User.name == name.strip()))
    usable = user is not None and user.disabled_at is None and user.password_hash is not None
    stored = user.password_hash if usable and user is not None else None
    try:
        _hasher.verify(stored or _dummy(), password)
        ok = stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        ok = False
    if not ok or user is None:
        limits.per_account.fail(account_key)
        limits.per_client.fail(client_key)
        log.info("sign-in refused for a name from %s", client)
        raise SignInFailed(WRONG_NAME_OR_PASSWORD)
    limits.per_account.forget(account_key)
    if _hasher.check_needs_rehash(stored):  # type: ignore[arg-type]
        user.password_hash = _hasher.hash(password)
    token = secrets.token_urlsafe(32)
    now = utcnow()
    session.add(
        WebSession(
            user_id=user.id,
            token_hash=hash_session_token(token),
            created_at=now,
            last_seen_at=now,
            expires_at=now + timedelta(hours=settings.session_max_hours),
        )
    )
    # Housekeeping on a rare path: the person's own sessions that ran out.
    session.execute(
        delete(WebSession).where(
            WebSession.user_id == user.id,
            (WebSession.expires_at <= now)
            | (WebSession.last_seen_at <= now - timedelta(minutes=settings.session_idle_minutes)),
        )
    )
    session.flush()
    return Principal(user.id, user.name, user.role), token
