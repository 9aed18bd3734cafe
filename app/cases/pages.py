"""The case managers' page: cases with their status and notes, one case with its contact."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from app.auth import RequireCaseManager
from app.cases import service
from app.config import app_settings
from app.db import SessionDep
from app.pages import FormDep, render

pages_router = APIRouter(include_in_schema=False)


@pages_router.get("/work/cases", response_class=HTMLResponse)
def cases_page(
    request: Request,
    session: SessionDep,
    user: RequireCaseManager,
    status: str | None = None,
    case: int | None = None,
) -> HTMLResponse:
    chosen = status if status in ("open", "contacted", "resolved") else None
    items, _ = service.list_cases(session, status=chosen, limit=200)  # type: ignore[arg-type]
    opened = service.get_case(session, app_settings(request), case, user) if case else None
    return render(
        request,
        "wb_cases.html",
        {
            "cases": items,
            "status": chosen,
            "opened": opened,
            "summary": service.summary(session),
        },
        user=user,
        current="/work/cases",
    )


@pages_router.post("/work/cases/{case_id:int}", response_class=HTMLResponse)
def case_action(
    case_id: int, request: Request, session: SessionDep, user: RequireCaseManager, form: FormDep
) -> RedirectResponse:
    status = form.get("status")
    note = form.get("note").strip()
    if status in ("open", "contacted", "resolved"):
        service.set_status(session, app_settings(request), case_id, status, user)  # type: ignore[arg-type]
    if note:
        service.add_note(session, case_id, note[:5000], user)
    return RedirectResponse(f"/work/cases?case={case_id}", status_code=303)
