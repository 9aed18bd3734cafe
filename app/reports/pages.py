"""The reports dashboard page: server-rendered shell; its script reads the trends API."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from app.reports.rollups import PERIODS

pages_router = APIRouter(include_in_schema=False)


@pages_router.get("/dashboard", response_class=HTMLResponse)
def dashboard(request: Request) -> HTMLResponse:
    # No data here: the page asks for an API token and fetches the aggregates with it.
    templates: Jinja2Templates = request.app.state.templates
    return templates.TemplateResponse(
        request,
        "dashboard.html",
        {"lang": "en", "periods": PERIODS, "default_period": "month"},
        headers={"Cache-Control": "no-cache"},
    )
