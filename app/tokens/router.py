"""Token API: admins create tokens for named people (the token is shown once), list them
(name, prefix, created, last used) and revoke them."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, StringConstraints

from app.auth import CurrentUser, Principal, RequireAdmin, create_token, revoke_token
from app.db import SessionDep
from app.errors import Conflict, Forbidden, Invalid, NotFound, problem_responses
from app.tokens.service import TokenRead, list_tokens, revoke_by_id

router = APIRouter(prefix="/api/v1/tokens", tags=["tokens"], responses=problem_responses(Forbidden))


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
    role: Literal["admin", "researcher", "viewer", "case_manager"]


class TokenCreated(BaseModel):
    name: str
    role: str
    token: str


class Me(BaseModel):
    id: int
    name: str
    role: str


@router.post(
    "", status_code=201, response_model=TokenCreated, responses=problem_responses(Conflict, Invalid)
)
def create(data: TokenCreate, session: SessionDep, user: RequireAdmin) -> TokenCreated:
    principal, token = create_token(session, name=data.name, role=data.role, actor=user)
    return TokenCreated(name=principal.name, role=principal.role, token=token)


@router.get("", response_model=list[TokenRead])
def list_all(
    session: SessionDep, _user: RequireAdmin, include_revoked: bool = False
) -> list[TokenRead]:
    """Every active token (with `include_revoked`, revoked ones too), newest first."""
    return list_tokens(session, include_revoked=include_revoked)


@router.delete(
    "/by-id/{token_id:int}", response_model=TokenRead, responses=problem_responses(NotFound)
)
def revoke_one(token_id: int, session: SessionDep, user: RequireAdmin) -> TokenRead:
    """Revoke one token by its id (from the list); revoking twice changes nothing."""
    return revoke_by_id(session, token_id, user)


@router.delete("/{prefix}", status_code=204, responses=problem_responses(NotFound))
def revoke(prefix: str, session: SessionDep, user: RequireAdmin) -> None:
    if revoke_token(session, prefix, actor=user) == 0:
        raise NotFound(f"no active token starts with {prefix!r}")


@router.get("/me", response_model=Me)
def me(user: CurrentUser) -> Me:
    return Me(**_fields(user))


def _fields(user: Principal) -> dict[str, object]:
    return {"id": user.id, "name": user.name, "role": user.role}
