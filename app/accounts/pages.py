"""Sign-in, sign-out, setting a password from a one-time link, and the admin's people page."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from app.accounts import service
from app.accounts.sessions import SESSION_COOKIE, csrf_matches, end_session
from app.auth import Principal, RequireAdmin
from app.config import Settings, app_settings
from app.db import SessionDep
from app.errors import AppError, TooManyRequests
from app.models import ROLES
from app.pages import FormDep, render, safe_next, see_other
from app.protection import CSRF_COOKIE, client_key, csrf_token_for, csrf_valid, new_csrf_cookie

router = APIRouter(include_in_schema=False)
SettingsDep = Annotated[Settings, Depends(app_settings)]


def _signed_out_form(
    request: Request,
    settings: Settings,
    template: str,
    context: dict[str, object],
    status_code: int = 200,
) -> HTMLResponse:
    """A form shown before anyone is signed in, protected by the double-submit CSRF cookie
    that the respondent form uses too."""
    cookie = request.cookies.get(CSRF_COOKIE)
    fresh = cookie is None or len(cookie) < 32
    if fresh:
        cookie = new_csrf_cookie()
    assert cookie is not None
    response = render(
        request,
        template,
        {**context, "form_csrf": csrf_token_for(settings.secret_key, cookie)},
        user=None,
        status_code=status_code,
    )
    if fresh:
        response.set_cookie(
            CSRF_COOKIE, cookie, httponly=True, samesite="lax", secure=settings.secure_cookies
        )
    return response


def _form_csrf_ok(request: Request, settings: Settings, submitted: str) -> bool:
    return csrf_valid(settings.secret_key, request.cookies.get(CSRF_COOKIE), submitted)


def _set_session_cookie(response: Response, token: str, settings: Settings) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="lax",
        secure=settings.secure_cookies,
        path="/",
    )


@router.get("/", response_class=HTMLResponse)
def root() -> Response:
    return see_other("/work")


@router.get("/sign-in", response_class=HTMLResponse)
def sign_in_form(request: Request, settings: SettingsDep, next: str | None = None) -> Response:
    return _signed_out_form(
        request, settings, "wb_sign_in.html", {"next": safe_next(next), "name": ""}
    )


@router.post("/sign-in", response_class=HTMLResponse)
def sign_in(
    request: Request, form: FormDep, session: SessionDep, settings: SettingsDep
) -> Response:
    name, target = form.get("name"), safe_next(form.get("next"))
    context: dict[str, object] = {"next": target, "name": name}
    if not _form_csrf_ok(request, settings, form.get("csrf_token")):
        context["error"] = "This form had expired. Please sign in again."
        return _signed_out_form(request, settings, "wb_sign_in.html", context, 400)
    try:
        _principal, token = service.sign_in(
            session,
            name=name,
            password=form.get("password"),
            client=client_key(request),
            limits=request.app.state.signin_limits,
            settings=settings,
        )
    except TooManyRequests as exc:
        context["error"] = exc.detail
        refused = _signed_out_form(request, settings, "wb_sign_in.html", context, 429)
        refused.headers.update(exc.headers or {})
        return refused
    except service.SignInFailed as exc:
        context["error"] = exc.detail
        return _signed_out_form(request, settings, "wb_sign_in.html", context, 401)
    response = see_other(target)
    _set_session_cookie(response, token, settings)
    return response


@router.post("/sign-out", response_class=HTMLResponse)
def sign_out(
    request: Request, form: FormDep, session: SessionDep, settings: SettingsDep
) -> Response:
    # Ending one's own session needs no valid CSRF token to be harmless, but a cross-site
    # page must not sign people out either: the token is checked when there is a session.
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        if not csrf_matches(settings, cookie, form.get("csrf_token")):
            return render(
                request,
                "message.html",
                {
                    "title": "Sign-out not confirmed",
                    "body": "That form was out of date. Reload the page and sign out again.",
                    "home": "/work",
                },
                user=None,
                status_code=403,
            )
        end_session(session, cookie)
    response = see_other("/sign-in?signed_out=1")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/account/password/{token}", response_class=HTMLResponse)
def password_form(
    token: str, request: Request, session: SessionDep, settings: SettingsDep
) -> Response:
    owner = service.link_owner(session, token)
    if owner is None:
        return _link_gone(request)
    return _signed_out_form(
        request, settings, "wb_set_password.html", {"name": owner.name, "token": token}
    )


def _link_gone(request: Request) -> HTMLResponse:
    return render(
        request,
        "message.html",
        {
            "title": "This link no longer works",
            "body": "Set-password links work once and expire. Ask an admin for a new one.",
        },
        user=None,
        status_code=410,
    )


@router.post("/account/password/{token}", response_class=HTMLResponse)
def set_password(
    token: str, request: Request, form: FormDep, session: SessionDep, settings: SettingsDep
) -> Response:
    owner = service.link_owner(session, token)
    if owner is None:
        return _link_gone(request)
    context: dict[str, object] = {"name": owner.name, "token": token}
    if not _form_csrf_ok(request, settings, form.get("csrf_token")):
        context["error"] = "This form had expired. Please type your new password again."
        return _signed_out_form(request, settings, "wb_set_password.html", context, 400)
    password, confirm = form.get("password"), form.get("confirm")
    problems = service.password_problems(owner.name, password, confirm)
    if problems:
        context["problems"] = problems
        return _signed_out_form(request, settings, "wb_set_password.html", context, 422)
    user = service.set_password(session, token, password, confirm)
    # Signed in straight away: the link proved who they are and they just chose the password.
    _, cookie = service.sign_in(
        session,
        name=user.name,
        password=password,
        client=client_key(request),
        limits=request.app.state.signin_limits,
        settings=settings,
    )
    response = see_other("/work?welcome=1")
    _set_session_cookie(response, cookie, settings)
    return response


# People (admin) ----------------------------------------------------------------------------------


def _people_page(
    request: Request,
    session: SessionDep,
    user: Principal,
    *,
    link: object = None,
    error: str | None = None,
    values: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    return render(
        request,
        "wb_people.html",
        {
            "people": service.list_people(session),
            "roles": ROLES,
            "link": link,
            "error": error,
            "values": values or {"name": "", "role": "researcher"},
        },
        user=user,
        current="/work/people",
        status_code=status_code,
    )


@router.get("/work/people", response_class=HTMLResponse)
def people(request: Request, session: SessionDep, user: RequireAdmin) -> Response:
    return _people_page(request, session, user)


@router.post("/work/people", response_class=HTMLResponse)
def create_person(
    request: Request, form: FormDep, session: SessionDep, user: RequireAdmin, settings: SettingsDep
) -> Response:
    values = {"name": form.get("name"), "role": form.get("role")}
    try:
        created, link = service.create_person(
            session, name=values["name"], role=values["role"], actor=user, settings=settings
        )
    except AppError as exc:
        return _people_page(
            request, session, user, error=exc.detail, values=values, status_code=exc.status
        )
    return _people_page(request, session, user, link={"name": created.name, **link.model_dump()})


@router.post("/work/people/{person_id:int}/link", response_class=HTMLResponse)
def new_link(
    person_id: int, request: Request, session: SessionDep, user: RequireAdmin, settings: SettingsDep
) -> Response:
    person = service.get_person(session, person_id)
    try:
        link = service.issue_password_link(session, person, actor=user, settings=settings)
    except AppError as exc:
        return _people_page(request, session, user, error=exc.detail, status_code=exc.status)
    return _people_page(request, session, user, link={"name": person.name, **link.model_dump()})


@router.post("/work/people/{person_id:int}/revoke", response_class=HTMLResponse)
def revoke(person_id: int, request: Request, session: SessionDep, user: RequireAdmin) -> Response:
    person = service.get_person(session, person_id)
    try:
        service.revoke_person(session, person, user)
    except AppError as exc:
        return _people_page(request, session, user, error=exc.detail, status_code=exc.status)
    return see_other("/work/people")
