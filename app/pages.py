"""What every workbench page shares: rendering with the signed-in person and their CSRF token,
reading a posted form off the event loop's way, safe redirects, HTML error pages."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from app.auth import Principal

NAV = (
    # (path, label, roles)
    ("/work", "Queue", ("admin", "researcher")),
    ("/work/adjudication", "Adjudication", ("admin",)),
    ("/work/codebooks", "Codebooks", ("admin", "researcher")),
    ("/work/surveys", "Surveys", ("admin",)),
    ("/work/reports", "Reports", ("admin", "researcher", "viewer")),
    ("/work/cases", "Cases", ("admin", "case_manager")),
    ("/work/alerts", "Alerts", ("admin", "researcher", "viewer")),
    ("/work/people", "People", ("admin",)),
    ("/work/tokens", "Tokens", ("admin",)),
    ("/work/webhooks", "Webhooks", ("admin",)),
)


class FormFields:
    """A posted form: every value of a name as a list of strings (files are ignored)."""

    def __init__(self, values: Mapping[str, list[str]]) -> None:
        self._values = dict(values)

    def get(self, name: str, default: str = "") -> str:
        found = self._values.get(name)
        return found[0] if found else default

    def getlist(self, name: str) -> list[str]:
        return list(self._values.get(name, []))

    def __contains__(self, name: str) -> bool:
        return name in self._values


async def read_form(request: Request) -> FormFields:
    form = await request.form()
    values: dict[str, list[str]] = {}
    for key, value in form.multi_items():
        if isinstance(value, str):
            values.setdefault(key, []).append(value)
    return FormFields(values)


FormDep = Annotated[FormFields, Depends(read_form)]


def form_int(text: str | None) -> int | str | None:
    """A form field's digits as the integer the API's schemas take (strict JSON integers);
    anything else is passed on for the schema to refuse with its message."""
    return int(text) if text and text.strip().isdigit() else text


def templates(request: Request) -> Jinja2Templates:
    found: Jinja2Templates = request.app.state.templates
    return found


def nav_for(user: Principal | None) -> list[tuple[str, str]]:
    if user is None:
        return []
    return [(path, label) for path, label, roles in NAV if user.role in roles]


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any],
    *,
    user: Principal | None,
    status_code: int = 200,
    current: str | None = None,
) -> HTMLResponse:
    response = templates(request).TemplateResponse(
        request,
        template,
        {
            "lang": "en",
            "user": user,
            "nav": nav_for(user),
            "current": current,
            "csrf": getattr(request.state, "csrf_token", ""),
            **context,
        },
        status_code=status_code,
    )
    # Pages carry story text and the person's work: never kept in a shared cache or history.
    response.headers["Cache-Control"] = "no-store"
    return response


def safe_next(target: str | None, default: str = "/work") -> str:
    """Only a path on this site (never //other.host or a scheme) is followed after sign-in."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


def see_other(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


def sign_in_redirect(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return see_other(f"/sign-in?next={quote(target, safe='')}")


def is_page_request(request: Request) -> bool:
    """A request that wants an HTML page back: any non-API path, or a browser navigating to an
    API URL (e.g. the study report as HTML) without a bearer token."""
    path = request.url.path
    if path.startswith(("/static/", "/openapi.json", "/healthz", "/readyz", "/metrics")):
        return False
    if path.startswith("/api/"):
        return (
            request.method == "GET"
            and "authorization" not in request.headers
            and request.headers.get("accept", "").startswith("text/html")
        )
    return True


def error_page(request: Request, status: int, title: str, detail: str) -> HTMLResponse:
    response = templates(request).TemplateResponse(
        request,
        "message.html",
        {"lang": "en", "title": title, "body": detail, "home": "/work"},
        status_code=status,
    )
    response.headers["Cache-Control"] = "no-store"
    return response
