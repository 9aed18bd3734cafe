"""The respondent's form: server-rendered, works without JavaScript, never loses typed text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from app.config import app_settings
from app.db import SessionDep
from app.i18n import DEFAULT_LANGUAGE, translator
from app.incidents.service import (
    ANSWER_FIELDS,
    CHOICE_FIELDS,
    FieldError,
    check_story,
    new_submission_key,
    store_story,
)
from app.models import Survey
from app.protection import CSRF_COOKIE, client_key, csrf_token_for, csrf_valid, new_csrf_cookie
from app.surveys.service import find_by_slug, find_invitation, invitation_status, survey_state

router = APIRouter(include_in_schema=False)

# Fields the form sends besides the answers; anything else is an unknown field.
FORM_CONTROL_FIELDS = ("consent", "csrf_token", "submission_id", "invitation", "website")
HONEYPOT_FIELD = "website"
RECEIPT_COOKIE = "cit_receipt"


def _templates(request: Request) -> Jinja2Templates:
    templates: Jinja2Templates = request.app.state.templates
    return templates


def _message_page(request: Request, language: str, kind: str, status_code: int) -> HTMLResponse:
    t = translator(language)
    return _templates(request).TemplateResponse(
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


def _unavailable(request: Request, survey: Survey | None) -> HTMLResponse | None:
    if survey is None:
        return _message_page(request, DEFAULT_LANGUAGE, "not_found", 404)
    state = survey_state(survey)
    if state == "not_open":
        return _message_page(request, survey.language, "not_found", 404)
    if state == "closed":
        return _message_page(request, survey.language, "closed", 410)
    return None


def _render_form(
    request: Request,
    survey: Survey,
    *,
    values: dict[str, Any],
    errors: list[FieldError],
    form_error: str | None = None,
    invitation: str | None = None,
    submission_id: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    settings = app_settings(request)
    t = translator(survey.language)
    cookie = request.cookies.get(CSRF_COOKIE)
    fresh_cookie = cookie is None or len(cookie) < 32
    if fresh_cookie:
        cookie = new_csrf_cookie()
    assert cookie is not None
    error_text = {e.field: t(f"errors.{e.code}", **e.params) for e in errors}
    response = _templates(request).TemplateResponse(
        request,
        "survey_form.html",
        {
            "t": t,
            "lang": survey.language,
            "survey": survey,
            "q": survey.questions,
            "touchpoints": survey.choices.get("touchpoints", []),
            "channels": survey.choices.get("channels", []),
            "values": values,
            "errors": error_text,
            "form_error": form_error or (t("errors.summary") if errors else None),
            "csrf_token": csrf_token_for(settings.secret_key, cookie),
            "submission_id": submission_id or new_submission_key(),
            "invitation": invitation,
            "max_chars": settings.max_answer_chars,
            "action": request.url_for("submit_form", slug=survey.slug).path,
        },
        status_code=status_code,
    )
    if fresh_cookie:
        response.set_cookie(
            CSRF_COOKIE,
            cookie,
            httponly=True,
            samesite="lax",
            secure=settings.public_base_url.startswith("https://"),
        )
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/s/{slug}", response_class=HTMLResponse, name="survey_form")
def survey_form(slug: str, request: Request, session: SessionDep) -> Response:
    survey = find_by_slug(session, slug)
    return _unavailable(request, survey) or _render_form(request, survey, values={}, errors=[])  # type: ignore[arg-type]


@router.get("/i/{token}", response_class=HTMLResponse, name="invitation_form")
def invitation_form(token: str, request: Request, session: SessionDep) -> Response:
    invitation = find_invitation(session, token)
    if invitation is None:
        return _message_page(request, DEFAULT_LANGUAGE, "invitation_invalid", 404)
    survey = session.get(Survey, invitation.survey_id)
    unavailable = _unavailable(request, survey)
    if unavailable is not None:
        return unavailable
    assert survey is not None
    status = invitation_status(invitation)
    if status == "used":
        return _message_page(request, survey.language, "invitation_used", 410)
    if status == "expired":
        return _message_page(request, survey.language, "invitation_expired", 410)
    return _render_form(request, survey, values={}, errors=[], invitation=token)


@dataclass(frozen=True)
class PostedForm:
    values: dict[str, str]
    names: frozenset[str]


async def posted_form(request: Request) -> PostedForm:
    """The posted fields, read asynchronously so that the route itself can be a plain function:
    its database work then runs in the thread pool, not on the event loop."""
    form = await request.form()
    return PostedForm({k: v for k, v in form.items() if isinstance(v, str)}, frozenset(form.keys()))


@router.post("/s/{slug}", response_class=HTMLResponse, name="submit_form")
def submit_form(
    slug: str,
    request: Request,
    session: SessionDep,
    form: Annotated[PostedForm, Depends(posted_form)],
) -> Response:
    survey = find_by_slug(session, slug)
    unavailable = _unavailable(request, survey)
    if unavailable is not None:
        return unavailable
    assert survey is not None
    settings = app_settings(request)
    t = translator(survey.language)
    values = dict(form.values)
    invitation = values.get("invitation") or None
    submission_id = values.get("submission_id") or None
    keep = {"invitation": invitation, "submission_id": submission_id}

    def again(
        errors: list[FieldError], form_error: str | None = None, status_code: int = 422
    ) -> HTMLResponse:
        return _render_form(
            request,
            survey,
            values=values,
            errors=errors,
            form_error=form_error,
            status_code=status_code,
            **keep,
        )

    if values.get(HONEYPOT_FIELD):
        # A bot filled the hidden field: look successful, store nothing.
        return RedirectResponse(request.url_for("thanks", slug=slug).path, status_code=303)
    if not request.app.state.submit_limiter.allow(client_key(request)):
        return again([], t("errors.rate_limited"), status_code=429)
    unknown = sorted(
        set(form.names) - set(ANSWER_FIELDS) - set(CHOICE_FIELDS) - set(FORM_CONTROL_FIELDS)
    )
    if unknown:
        return again([], t("errors.unknown_fields", fields=", ".join(unknown)), 400)
    if not csrf_valid(
        settings.secret_key, request.cookies.get(CSRF_COOKIE), values.get("csrf_token")
    ):
        return again([], t("errors.csrf"), status_code=400)

    story, errors = check_story(survey, values, values.get("consent") == "yes", settings)
    if story is None:
        return again(errors)
    result = store_story(
        session,
        survey,
        story,
        submission_key=submission_id,
        invitation_token=invitation,
        secret_key=settings.secret_key,
    )
    if result.outcome in ("stored", "duplicate"):
        thanks_path = request.url_for("thanks", slug=slug).path
        redirect = RedirectResponse(thanks_path, status_code=303)
        if result.receipt:
            # Shown on the thank-you page only: a cookie keeps it out of URLs and logs.
            redirect.set_cookie(
                RECEIPT_COOKIE,
                result.receipt,
                path=thanks_path,
                max_age=3600,
                httponly=True,
                samesite="lax",
                secure=settings.public_base_url.startswith("https://"),
            )
        return redirect
    kind = result.outcome
    return _message_page(request, survey.language, kind, 404 if kind.endswith("invalid") else 410)


@router.get("/s/{slug}/thanks", response_class=HTMLResponse, name="thanks")
def thanks(slug: str, request: Request, session: SessionDep) -> Response:
    survey = find_by_slug(session, slug)
    language = survey.language if survey else DEFAULT_LANGUAGE
    t = translator(language)
    receipt = request.cookies.get(RECEIPT_COOKIE)
    response = _templates(request).TemplateResponse(
        request,
        "thanks.html",
        {
            "t": t,
            "lang": language,
            "title": t("pages.thanks_title"),
            "body": t("pages.thanks_body"),
            "receipt": receipt if survey and receipt and len(receipt) <= 32 else None,
            "withdraw_path": f"/s/{slug}/withdraw" if survey else None,
        },
    )
    response.headers["Cache-Control"] = "no-store"
    return response
