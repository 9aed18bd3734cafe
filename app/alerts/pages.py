"""The alerts page: a survey's rules (researchers and admins add them) and the fired alerts."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError

from app.alerts import service
from app.alerts.schemas import AlertRuleCreate
from app.auth import RequireAnyRole, RequireResearcher
from app.db import SessionDep
from app.pages import FormDep, form_int, render

pages_router = APIRouter(include_in_schema=False)


def _page(
    request: Request, session: SessionDep, user: RequireAnyRole, error: str | None = None
) -> HTMLResponse:
    alerts, _ = service.list_alerts(session, reveal=user.role == "admin", limit=200)
    return render(
        request,
        "wb_alerts.html",
        {
            "rules": [service.rule_read(r) for r in service.list_rules(session)],
            "alerts": list(reversed(alerts)),
            "can_edit": user.role in ("admin", "researcher"),
            "error": error,
        },
        user=user,
        current="/work/alerts",
        status_code=422 if error else 200,
    )


@pages_router.get("/work/alerts", response_class=HTMLResponse)
def alerts_page(request: Request, session: SessionDep, user: RequireAnyRole) -> HTMLResponse:
    return _page(request, session, user)


@pages_router.post("/work/alerts", response_class=HTMLResponse, response_model=None)
def add_rule(
    request: Request, session: SessionDep, user: RequireResearcher, form: FormDep
) -> HTMLResponse | RedirectResponse:
    fields = {
        k: form.get(k) or None
        for k in (
            "survey_id",
            "name",
            "code",
            "valence",
            "group_field",
            "group_value",
            "period",
            "measure",
            "trigger",
            "level",
            "min_base",
            "threshold",
        )
    }
    body = {k: form_int(v) if k in ("survey_id", "min_base") else v for k, v in fields.items()}
    try:
        data = AlertRuleCreate.model_validate({k: v for k, v in body.items() if v is not None})
    except ValidationError as error:
        return _page(request, session, user, "; ".join(e["msg"] for e in error.errors()))
    service.create_rule(session, data, user)
    return RedirectResponse("/work/alerts", status_code=303)
