"""Listing and revoking API tokens (creating them lives in app.auth, beside checking them)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from app import audit
from app.auth import Principal
from app.errors import NotFound
from app.models import ApiToken, User
from app.models.base import utcnow


class TokenRead(BaseModel):
    id: int
    name: str = Field(description="The person the token is for")
    role: str
    prefix: str = Field(description="The token's first characters, to recognise it")
    created_at: datetime
    last_used_at: datetime | None = Field(description="Recorded to the minute")
    revoked_at: datetime | None


def list_tokens(session: Session, *, include_revoked: bool = False) -> list[TokenRead]:
    query = (
        select(ApiToken, User.name, User.role)
        .join(User, User.id == ApiToken.user_id)
        .order_by(ApiToken.created_at.desc(), ApiToken.id.desc())
    )
    if not include_revoked:
        query = query.where(ApiToken.revoked_at.is_(None))
    return [
        TokenRead(
            id=token.id,
            name=name,
            role=role,
            prefix=token.prefix,
            created_at=token.created_at,
            last_used_at=token.last_used_at,
            revoked_at=token.revoked_at,
        )
        for token, name, role in session.execute(query)
    ]


def revoke_by_id(session: Session, token_id: int, actor: Principal | None) -> TokenRead:
    row = session.execute(
        select(ApiToken, User.name, User.role)
        .join(User, User.id == ApiToken.user_id)
        .where(ApiToken.id == token_id)
    ).first()
    if row is None:
        raise NotFound(f"there is no token with id {token_id}")
    token, name, role = row
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        session.flush()
        audit.record(
            session, actor, "token.revoke", "api_token", token.id, after={"prefix": token.prefix}
        )
    return TokenRead(
        id=token.id,
        name=name,
        role=role,
        prefix=token.prefix,
        created_at=token.created_at,
        last_used_at=token.last_used_at,
        revoked_at=token.revoked_at,
    )
