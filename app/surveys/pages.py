"""The respondent's form: server-rendered, works without JavaScript, never loses typed text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote, unquote_to_bytes

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings, app_settings
from app.db import DbGate, SessionDep, session_scope
from app.errors import DATABASE_UNAVAILABLE, RETRY_AFTER_SECONDS, ServiceUnavailable
from app.i18n import DEFAULT_LANGUAGE, translator
from app.incidents.intake import receive_story
from app.incidents.service import (
    ANSWER_FIELDS,
    CHOICE_FIELDS,
    FieldError,
    new_submission_key,
)
from app.models import Survey
from app.protection import CSRF_COOKIE, client_key, csrf_token_for, csrf_valid, new_csrf_cookie
from app.surveys.service import (
    default_questions,
    find_by_slug,
    find_invitation,
    invitation_status,
    survey_state,
)

router = APIRouter(include_in_schema=False)

# Fields the form sends besides the answers; anything else is an unknown field.
FORM_CONTROL_FIELDS = (
    "consent",
    "csrf_token",
    "submission_id",
    "invitation",
    "website",
    "contact_ok",
    "contact",
)
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
    # The body was not valid UTF-8: what could be read is in `values` (with U+FFFD where bytes
    # were broken) so that the respondent gets it back, but nothing is stored from it.
    undecodable: bool = False


async def posted_form(request: Request) -> PostedForm:
    """The posted fields, read on the event loop. A urlencoded body is decoded strictly: the
    form parser would silently replace bytes that are not UTF-8."""
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        values, undecodable = _parse_urlencoded(await request.body())
        return PostedForm(values, frozenset(values), undecodable)
    form = await request.form()
    return PostedForm({k: v for k, v in form.items() if isinstance(v, str)}, frozenset(form.keys()))


# The gate's 503 and the database's own errors: the form answers both the same way.
DATABASE_OR_GATE: tuple[type[Exception], ...] = (ServiceUnavailable, *DATABASE_UNAVAILABLE)


def _parse_urlencoded(body: bytes) -> tuple[dict[str, str], bool]:
    """Fields of a urlencoded body (the first of repeated names), each decoded as UTF-8, and
    whether any was not valid UTF-8 (those are decoded with U+FFFD to be shown back)."""
    values: dict[str, str] = {}
    undecodable = False
    for pair in body.split(b"&"):
        if not pair:
            continue
        raw_name, _, raw_value = pair.partition(b"=")
        decoded = []
        for raw in (raw_name, raw_value):
            data = unquote_to_bytes(raw.replace(b"+", b" "))
            try:
                decoded.append(data.decode("utf-8"))
            except UnicodeDecodeError:
                undecodable = True
                decoded.append(data.decode("utf-8", errors="replace"))
        values.setdefault(decoded[0], decoded[1])
    return values, undecodable


def _form_problem(request: Request, form: PostedForm, settings: Settings) -> tuple[str, int] | None:
    """A reason to send the form back before touching the database: (message key, status)."""
    if form.undecodable:
        return "errors.undecodable", 400
    if not request.app.state.submit_limiter.allow(client_key(request)):
        return "errors.rate_limited", 429
    unknown = set(form.names) - set(ANSWER_FIELDS) - set(CHOICE_FIELDS) - set(FORM_CONTROL_FIELDS)
    if unknown:
        return "errors.unknown_fields", 400
    if not csrf_valid(
        settings.secret_key, request.cookies.get(CSRF_COOKIE), form.values.get("csrf_token")
    ):
        return "errors.csrf", 400
    return None


def read_survey(factory: sessionmaker[Session], slug: str) -> Survey | None:
    """The survey at `slug`, detached, from a read-only session of its own."""
    with session_scope(factory, write=False) as session:
        survey = find_by_slug(session, slug)
        if survey is not None:
            session.expunge(survey)
        return survey


def _remembered_survey(request: Request, slug: str, values: dict[str, str]) -> Survey:
    """The survey as last seen by this process, to re-render a form while the database is
    away; a bare stand-in (default questions, the posted choices) if it was never seen."""
    cached: Survey | None = request.app.state.survey_cache.get(slug)
    if cached is not None:
        return cached
    choices = {
        "touchpoints": [values["touchpoint"]] if values.get("touchpoint") else [],
        "channels": [values["channel"]] if values.get("channel") else [],
    }
    return Survey(
        slug=slug,
        title="",
        introduction=None,
        consent_text=None,
        # The respondent's contact comes back too, under the default wording.
        contact_question=translator(DEFAULT_LANGUAGE)("form.contact_question")
        if values.get("contact") or values.get("contact_ok")
        else None,
        language=DEFAULT_LANGUAGE,
        questions=default_questions(DEFAULT_LANGUAGE),
        choices=choices,
        status="open",
    )


def _thanks_redirect(
    request: Request, slug: str, receipt: str | None, settings: Settings
) -> RedirectResponse:
    thanks_path = f"/s/{quote(slug, safe='')}/thanks"
    redirect = RedirectResponse(thanks_path, status_code=303)
    if receipt:
        # Shown on the thank-you page only: a cookie keeps it out of URLs and logs.
        redirect.set_cookie(
            RECEIPT_COOKIE,
            receipt,
            path=thanks_path,
            max_age=3600,
            httponly=True,
            samesite="lax",
            secure=settings.public_base_url.startswith("https://"),
        )
    return redirect


@router.post("/s/{slug}", response_class=HTMLResponse, name="submit_form")
async def submit_form(
    slug: str,
    request: Request,
    form: Annotated[PostedForm, Depends(posted_form)],
) -> Response:
    settings = app_settings(request)
    gate: DbGate = request.app.state.db_gate
    factory: sessionmaker[Session] = request.app.state.sessionmaker
    values = dict(form.values)
    invitation = values.get("invitation") or None
    submission_id = values.get("submission_id") or None

    def again(
        survey: Survey, errors: list[FieldError], form_error: str | None, status_code: int
    ) -> HTMLResponse:
        return _render_form(
            request,
            survey,
            values=values,
            errors=errors,
            form_error=form_error,
            status_code=status_code,
            invitation=invitation,
            submission_id=submission_id,
        )

    if values.get(HONEYPOT_FIELD):
        # A bot filled the hidden field: look successful, store nothing.
        return RedirectResponse(f"/s/{quote(slug, safe='')}/thanks", status_code=303)
    refused = _form_problem(request, form, settings)
    try:
        intake = (
            await gate.run(
                receive_story,
                request.app.state.engine,
                settings,
                request.app.state.rules_cache,
                slug,
                values,
                values.get("consent") == "yes",
                submission_key=submission_id,
                invitation_token=invitation,
            )
            if refused is None
            else None
        )
        if intake is not None and intake.outcome in ("stored", "duplicate"):
            return _thanks_redirect(request, slug, intake.receipt, settings)
        # Anything else shows the survey again (or a page about it): read it whole.
        survey = await gate.run(read_survey, factory, slug)
    except DATABASE_OR_GATE:
        # The database is away or saturated: the respondent keeps every word, and is asked to
        # send again in a moment (the same submission id, so a retry stores one story).
        survey = _remembered_survey(request, slug, values)
        page = again(survey, [], translator(survey.language)("errors.unavailable"), 503)
        page.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return page

    if survey is not None:
        request.app.state.survey_cache[slug] = survey
    unavailable = _unavailable(request, survey)
    if unavailable is not None:
        return unavailable
    assert survey is not None
    t = translator(survey.language)
    if refused is not None:
        key, status_code = refused
        unknown = sorted(
            set(form.names) - set(ANSWER_FIELDS) - set(CHOICE_FIELDS) - set(FORM_CONTROL_FIELDS)
        )
        return again(survey, [], t(key, fields=", ".join(unknown)), status_code)
    assert intake is not None
    if intake.outcome == "invalid":
        return again(survey, intake.errors, None, 422)
    kind = intake.outcome
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
