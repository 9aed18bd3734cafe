"""The reports pages: the dashboard (a server-rendered shell whose script reads the trends API,
with the session cookie when signed in, else a pasted token) and the list of surveys with their
dashboard and study report."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from app.auth import OptionalUser, RequireAnyRole
from app.db import SessionDep
from app.models import Survey
from app.pages import render
from app.reports.rollups import PERIODS

pages_router = APIRouter(include_in_schema=False)


@pages_router.get("/dashboard", response_class=HTMLResponse)
def dashboard(request: Request, user: OptionalUser) -> HTMLResponse:
    # No data here: the script fetches the aggregates (with the session, or a pasted token).
    # Days and weeks only for the team (the API refuses them to viewers); a pasted token's role
    # is not known here, so the team signs in for them.
    team = user is not None and user.role in ("admin", "researcher")
    periods = PERIODS if team else tuple(p for p in PERIODS if p not in ("day", "week"))
    return render(
        request,
        "dashboard.html",
        {"periods": periods, "default_period": "month"},
        user=user,
        current="/work/reports",
    )


@pages_router.get("/work/reports", response_class=HTMLResponse)
def reports(request: Request, session: SessionDep, user: RequireAnyRole) -> HTMLResponse:
    surveys = session.execute(
        select(Survey.id, Survey.title, Survey.status).order_by(Survey.id)
    ).all()
    return render(
        request, "wb_reports.html", {"surveys": surveys}, user=user, current="/work/reports"
    )
