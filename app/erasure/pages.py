"""The public withdrawal page: a respondent enters their receipt code; the story is erased."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from app.config import app_settings
from app.db import SessionDep
from app.erasure import service
from app.errors import NotFound
from app.i18n import DEFAULT_LANGUAGE, translator
from app.protection import CSRF_COOKIE, client_key, csrf_token_for, csrf_valid, new_csrf_cookie
from app.surveys.pages import PostedForm, posted_form
from app.surveys.service import find_by_slug

router = APIRouter(include_in_schema=False)


def _page(
    request: Request,
    slug: str,
    language: str,
    *,
    code: str = "",
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    settings = app_settings(request)
    cookie = request.cookies.get(CSRF_COOKIE)
    fresh = cookie is None or len(cookie) < 32
    if fresh:
        cookie = new_csrf_cookie()
    assert cookie is not None
    response = request.app.state.templates.TemplateResponse(
        request,
        "withdraw.html",
        {
            "t": translator(language),
            "lang": language,
            "code": code,
            "error": error,
            "csrf_token": csrf_token_for(settings.secret_key, cookie),
            "action": f"/s/{slug}/withdraw",
        },
        status_code=status_code,
    )
    if fresh:
        response.set_cookie(
            CSRF_COOKIE,
            cookie,
            httponly=True,
            samesite="lax",
            secure=settings.public_base_url.startswith("https://"),
        )
    response.headers["Cache-Control"] = "no-store"
    return response


def _message(request: Request, language: str, kind: str, status_code: int) -> HTMLResponse:
    t = translator(language)
    response: HTMLResponse = request.app.state.templates.TemplateResponse(
        request,
        "message.html",
        {
            "t": t,
            "lang": language,
            "title": t(f"pages.{kind}_title"),
            "body": t(f"pages.{kind}_body"),
        },
        status_code=status_code,
    )
    return response


@router.get("/s/{slug}/withdraw", response_class=HTMLResponse, name="withdraw_form")
def withdraw_form(slug: str, request: Request, session: SessionDep) -> Response:
    survey = find_by_slug(session, slug)
    if survey is None:
        return _message(request, DEFAULT_LANGUAGE, "not_found", 404)
    return _page(request, slug, survey.language)


@router.post("/s/{slug}/withdraw", response_class=HTMLResponse, name="withdraw_submit")
def withdraw_submit(
    slug: str,
    request: Request,
    session: SessionDep,
    form: Annotated[PostedForm, Depends(posted_form)],
) -> Response:
    survey = find_by_slug(session, slug)
    if survey is None:
        return _message(request, DEFAULT_LANGUAGE, "not_found", 404)
    t = translator(survey.language)
    code = form.values.get("receipt", "")[:40]
    settings = app_settings(request)
    if not request.app.state.submit_limiter.allow(client_key(request)):
        return _page(
            request,
            slug,
            survey.language,
            code=code,
            error=t("errors.rate_limited"),
            status_code=429,
        )
    if not csrf_valid(
        settings.secret_key, request.cookies.get(CSRF_COOKIE), form.values.get("csrf_token")
    ):
        return _page(
            request, slug, survey.language, code=code, error=t("errors.csrf"), status_code=400
        )
    try:
        service.withdraw(session, code, survey_id=survey.id)
    except NotFound:
        return _page(
            request,
            slug,
            survey.language,
            code=code,
            error=t("pages.withdraw_unknown"),
            status_code=404,
        )
    return _message(request, survey.language, "withdrawn", 200)
