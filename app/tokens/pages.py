"""The admin's API tokens page: every token with its person, prefix, creation and last use;
create one (shown once) or revoke one."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from app.auth import Principal, RequireAdmin, create_token
from app.db import SessionDep
from app.errors import AppError
from app.models import ROLES
from app.pages import FormDep, render, see_other
from app.tokens.service import list_tokens, revoke_by_id

router = APIRouter(include_in_schema=False)


def _page(
    request: Request,
    session: SessionDep,
    user: Principal,
    *,
    created: dict[str, str] | None = None,
    error: str | None = None,
    values: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    show_revoked = request.query_params.get("revoked") == "1"
    return render(
        request,
        "wb_tokens.html",
        {
            "tokens": list_tokens(session, include_revoked=show_revoked),
            "show_revoked": show_revoked,
            "roles": ROLES,
            "created": created,
            "error": error,
            "values": values or {"name": "", "role": "researcher"},
        },
        user=user,
        current="/work/tokens",
        status_code=status_code,
    )


@router.get("/work/tokens", response_class=HTMLResponse)
def tokens(request: Request, session: SessionDep, user: RequireAdmin) -> Response:
    return _page(request, session, user)


@router.post("/work/tokens", response_class=HTMLResponse)
def create(request: Request, form: FormDep, session: SessionDep, user: RequireAdmin) -> Response:
    values = {"name": form.get("name"), "role": form.get("role")}
    try:
        principal, token = create_token(
            session, name=values["name"], role=values["role"], actor=user
        )
    except AppError as exc:
        return _page(
            request, session, user, error=exc.detail, values=values, status_code=exc.status
        )
    return _page(request, session, user, created={"name": principal.name, "token": token})


@router.post("/work/tokens/{token_id:int}/revoke", response_class=HTMLResponse)
def revoke(token_id: int, session: SessionDep, user: RequireAdmin) -> Response:
    revoke_by_id(session, token_id, user)
    return see_other("/work/tokens")
