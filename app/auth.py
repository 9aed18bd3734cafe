"""API tokens (stored hashed), roles, and the CurrentUser / require_role dependencies."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.orm import Session

from app import audit
from app.db import SessionDep, brief_read
from app.errors import Conflict, Forbidden, Invalid, Unauthorized
from app.models import ROLES, ApiToken, User
from app.models.base import utcnow

TOKEN_PREFIX = "cit_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the part of a user that request handlers need."""

    id: int
    name: str
    role: str


def hash_token(token: str) -> str:
    # Tokens carry 256 random bits, so a plain SHA-256 is enough to make a stolen table useless.
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(
    session: Session, *, name: str, role: str, actor: Principal | None = None
) -> tuple[Principal, str]:
    """Create a token for the user `name` (creating the user); return it once, in clear."""
    if role not in ROLES:
        raise Invalid(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    name = name.strip()
    if not name or len(name) > 100:
        raise Invalid("name must be 1 to 100 characters")
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        user = User(name=name, role=role)
        session.add(user)
        session.flush()
    elif user.role != role:
        raise Conflict(f"user {name!r} exists with role {user.role!r}, not {role!r}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(user_id=user.id, token_hash=hash_token(token), prefix=token[:10])
    session.add(row)
    session.flush()
    audit.record(
        session,
        actor,
        "token.create",
        "api_token",
        row.id,
        after={"user": name, "role": role, "prefix": row.prefix},
    )
    return Principal(user.id, user.name, user.role), token


def authenticate(session: Session, token: str) -> Principal | None:
    row = session.execute(
        select(User.id, User.name, User.role)
        .join(ApiToken, ApiToken.user_id == User.id)
        .where(ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None))
    ).first()
    return Principal(row.id, row.name, row.role) if row else None


def revoke_token(session: Session, prefix: str, actor: Principal | None = None) -> int:
    rows = session.scalars(
        select(ApiToken).where(ApiToken.prefix == prefix, ApiToken.revoked_at.is_(None))
    ).all()
    for row in rows:
        row.revoked_at = utcnow()
        audit.record(session, actor, "token.revoke", "api_token", row.id, after={"prefix": prefix})
    session.flush()
    return len(rows)


_bearer = HTTPBearer(auto_error=False, description="An API token from `cit token create`")


def current_user(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
    with brief_read(session):
        principal = authenticate(session, credentials.credentials)
    if principal is None:
        raise Unauthorized("invalid or revoked token")
    return principal


CurrentUser = Annotated[Principal, Depends(current_user)]


def require_role(*roles: str):  # type: ignore[no-untyped-def]
    allowed = frozenset(roles)

    def dependency(user: CurrentUser) -> Principal:
        if user.role not in allowed:
            raise Forbidden(
                f"this needs the role {' or '.join(sorted(allowed))}; your token has {user.role!r}"
            )
        return user

    return dependency


RequireAdmin = Annotated[Principal, Depends(require_role("admin"))]
RequireResearcher = Annotated[Principal, Depends(require_role("admin", "researcher"))]
RequireAnyRole = Annotated[Principal, Depends(require_role(*ROLES))]
