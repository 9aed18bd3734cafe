"""The admin's survey pages: list, create and edit (questions, language, choices, codebook,
double-coding share, review order), open and close, create invitations and download them as
CSV, links to the survey's dashboard and study report. Kept apart from pages.py (the
respondent's form) on purpose: that file is the submission hot path."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.auth import Principal, RequireAdmin
from app.codebooks.service import summaries
from app.config import Settings, app_settings
from app.db import SessionDep
from app.errors import AppError
from app.models import Incident, Invitation, Survey
from app.pages import FormDep, FormFields, form_int, render, see_other
from app.surveys import service
from app.surveys.schemas import (
    QUESTION_KEYS,
    InvitationBatchCreate,
    SurveyCreate,
    SurveyUpdate,
)

router = APIRouter(include_in_schema=False)
SettingsDep = Annotated[Settings, Depends(app_settings)]
QUESTION_LABELS = {
    "prompt": "Opening prompt",
    "occurred": "When did it happen?",
    "circumstances": "Circumstances",
    "what_happened": "What happened",
    "outcome": "Outcome",
    "valence": "Satisfying or not",
    "touchpoint": "Touchpoint",
    "channel": "Channel",
}


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _moment(text: str) -> datetime | None:
    """A datetime-local field, read as UTC."""
    if not text.strip():
        return None
    return datetime.fromisoformat(text.strip()).replace(tzinfo=UTC)


def _messages(exc: ValidationError) -> list[str]:
    out = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()))
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        out.append(f"{where.replace('_', ' ')}: {message}" if where else message)
    return out


def _form_values(survey: Survey | None) -> dict[str, Any]:
    if survey is None:
        return {
            "title": "",
            "slug": "",
            "introduction": "",
            "consent_text": "",
            "contact_question": "",
            "case_codes": "",
            "language": "en",
            "questions": {},
            "touchpoints": "",
            "channels": "",
            "closes_at": "",
            "codebook_id": "",
            "double_coding_share": "0",
            "review_order": "oldest",
        }
    return {
        "title": survey.title,
        "slug": survey.slug,
        "introduction": survey.introduction,
        "consent_text": survey.consent_text or "",
        "contact_question": survey.contact_question or "",
        "case_codes": "\n".join(survey.case_codes or []),
        "language": survey.language,
        "questions": dict(survey.questions),
        "touchpoints": "\n".join(survey.choices.get("touchpoints", [])),
        "channels": "\n".join(survey.choices.get("channels", [])),
        "closes_at": survey.closes_at.strftime("%Y-%m-%dT%H:%M") if survey.closes_at else "",
        "codebook_id": str(survey.codebook_id or ""),
        "double_coding_share": str(survey.double_coding_share),
        "review_order": survey.review_order,
    }


def _posted_values(form: FormFields) -> dict[str, Any]:
    return {
        "title": form.get("title"),
        "slug": form.get("slug"),
        "introduction": form.get("introduction"),
        "consent_text": form.get("consent_text"),
        "contact_question": form.get("contact_question"),
        "case_codes": form.get("case_codes"),
        "language": form.get("language"),
        "questions": {k: form.get(f"q_{k}") for k in QUESTION_KEYS},
        "touchpoints": form.get("touchpoints"),
        "channels": form.get("channels"),
        "closes_at": form.get("closes_at"),
        "codebook_id": form.get("codebook_id"),
        "double_coding_share": form.get("double_coding_share"),
        "review_order": form.get("review_order"),
        "open": form.get("open") == "1",
    }


def _body(values: dict[str, Any], *, current: Survey | None) -> dict[str, Any]:
    """The API body from the form; an unchanged question is left out, so that a survey whose
    language changes gets the new language's default wording for questions never reworded."""
    old = current.questions if current else {}
    questions = {
        k: v.strip()
        for k, v in values["questions"].items()
        if v.strip() and v.strip() != old.get(k)
    }
    body: dict[str, Any] = {
        "title": values["title"],
        "introduction": values["introduction"],
        "consent_text": values["consent_text"].strip() or None,
        "contact_question": values["contact_question"].strip() or None,
        "case_codes": _lines(values["case_codes"]),
        "language": values["language"],
        "questions": questions,
        "touchpoints": _lines(values["touchpoints"]),
        "channels": _lines(values["channels"]),
        "closes_at": _moment(values["closes_at"]),
        "codebook_id": int(values["codebook_id"]) if values["codebook_id"].isdigit() else None,
        "double_coding_share": form_int(values["double_coding_share"]) or 0,
        "review_order": values["review_order"],
    }
    if current is None:
        body["slug"] = values["slug"].strip() or None
        body["open"] = values.get("open", False)
    return body


def _editor(
    request: Request,
    session: Session,
    user: Principal,
    survey: Survey | None,
    values: dict[str, Any],
    *,
    errors: list[str] | None = None,
    settings: Settings,
    invitations: dict[str, Any] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    context: dict[str, Any] = {
        "survey": survey,
        "values": values,
        "errors": errors or [],
        "codebooks": summaries(session),
        "question_keys": QUESTION_KEYS,
        "question_labels": QUESTION_LABELS,
        "defaults": service.default_questions(values.get("language") or "en"),
        "invitations": invitations,
    }
    if survey is not None:
        context["read"] = service.to_read(survey, settings)
        context["counts"] = _counts(session, survey.id)
    return render(
        request,
        "wb_survey_edit.html",
        context,
        user=user,
        current="/work/surveys",
        status_code=status_code,
    )


def _counts(session: Session, survey_id: int) -> dict[str, int]:
    stories = session.scalar(select(func.count(Incident.id)).where(Incident.survey_id == survey_id))
    invitations = session.scalar(
        select(func.count(Invitation.id)).where(Invitation.survey_id == survey_id)
    )
    used = session.scalar(
        select(func.count(Invitation.id)).where(
            Invitation.survey_id == survey_id, Invitation.used_at.is_not(None)
        )
    )
    return {"stories": stories or 0, "invitations": invitations or 0, "used": used or 0}


@router.get("/work/surveys", response_class=HTMLResponse)
def surveys(
    request: Request, session: SessionDep, user: RequireAdmin, settings: SettingsDep
) -> Response:
    listed = service.list_surveys(session)
    stories = dict(
        session.execute(
            select(Incident.survey_id, func.count(Incident.id)).group_by(Incident.survey_id)
        ).all()
    )
    return render(
        request,
        "wb_surveys.html",
        {
            "surveys": [service.to_read(s, settings) for s in listed],
            "stories": stories,
        },
        user=user,
        current="/work/surveys",
    )


@router.get("/work/surveys/new", response_class=HTMLResponse)
def new_survey(
    request: Request, session: SessionDep, user: RequireAdmin, settings: SettingsDep
) -> Response:
    return _editor(request, session, user, None, _form_values(None), settings=settings)


@router.post("/work/surveys/new", response_class=HTMLResponse)
def create_survey(
    request: Request, form: FormDep, session: SessionDep, user: RequireAdmin, settings: SettingsDep
) -> Response:
    values = _posted_values(form)
    try:
        data = SurveyCreate.model_validate(_body(values, current=None))
        with session.begin_nested():
            survey = service.create_survey(session, data, user)
    except ValueError as exc:  # pydantic's ValidationError and a bad date alike
        errors = _messages(exc) if isinstance(exc, ValidationError) else [f"closes at: {exc}"]
        return _editor(
            request, session, user, None, values, errors=errors, settings=settings, status_code=422
        )
    except AppError as exc:
        return _editor(
            request,
            session,
            user,
            None,
            values,
            errors=[exc.detail],
            settings=settings,
            status_code=exc.status,
        )
    return see_other(f"/work/surveys/{survey.id}?created=1")


@router.get("/work/surveys/{survey_id:int}", response_class=HTMLResponse)
def edit_survey(
    survey_id: int, request: Request, session: SessionDep, user: RequireAdmin, settings: SettingsDep
) -> Response:
    survey = service.get_survey(session, survey_id)
    return _editor(request, session, user, survey, _form_values(survey), settings=settings)


@router.post("/work/surveys/{survey_id:int}", response_class=HTMLResponse)
def update_survey(
    survey_id: int,
    request: Request,
    form: FormDep,
    session: SessionDep,
    user: RequireAdmin,
    settings: SettingsDep,
) -> Response:
    survey = service.get_survey(session, survey_id)
    values = _posted_values(form)
    try:
        data = SurveyUpdate.model_validate(_body(values, current=survey))
        with session.begin_nested():
            service.update_survey(session, survey, data, user)
    except ValueError as exc:
        session.refresh(survey)
        errors = _messages(exc) if isinstance(exc, ValidationError) else [f"closes at: {exc}"]
        return _editor(
            request,
            session,
            user,
            survey,
            values,
            errors=errors,
            settings=settings,
            status_code=422,
        )
    except AppError as exc:
        session.refresh(survey)
        return _editor(
            request,
            session,
            user,
            survey,
            values,
            errors=[exc.detail],
            settings=settings,
            status_code=exc.status,
        )
    return see_other(f"/work/surveys/{survey_id}?saved=1")


@router.post("/work/surveys/{survey_id:int}/status", response_class=HTMLResponse)
def change_status(
    survey_id: int,
    request: Request,
    form: FormDep,
    session: SessionDep,
    user: RequireAdmin,
    settings: SettingsDep,
) -> Response:
    survey = service.get_survey(session, survey_id)
    wanted: Literal["open", "closed"] = "open" if form.get("status") == "open" else "closed"
    try:
        with session.begin_nested():
            service.set_status(session, survey, wanted, user)
    except AppError as exc:
        session.refresh(survey)
        return _editor(
            request,
            session,
            user,
            survey,
            _form_values(survey),
            errors=[exc.detail],
            settings=settings,
            status_code=exc.status,
        )
    return see_other(f"/work/surveys/{survey_id}?status={wanted}")


@router.post("/work/surveys/{survey_id:int}/invitations", response_class=HTMLResponse)
def create_invitations(
    survey_id: int,
    request: Request,
    form: FormDep,
    session: SessionDep,
    user: RequireAdmin,
    settings: SettingsDep,
) -> Response:
    survey = service.get_survey(session, survey_id)
    typed = {
        "count": form.get("count"),
        "expires_at": form.get("expires_at"),
        "segment": form.get("segment"),
    }
    try:
        data = InvitationBatchCreate.model_validate(
            {
                "count": form_int(typed["count"]) or 0,
                "expires_at": _moment(typed["expires_at"]),
                "attributes": {"segment": typed["segment"].strip()}
                if typed["segment"].strip()
                else {},
            }
        )
        with session.begin_nested():
            created = service.create_invitations(session, survey, data, settings, user)
    except ValueError as exc:
        errors = _messages(exc) if isinstance(exc, ValidationError) else [f"expires at: {exc}"]
        return _editor(
            request,
            session,
            user,
            survey,
            _form_values(survey),
            errors=errors,
            settings=settings,
            invitations=typed,
            status_code=422,
        )
    except AppError as exc:
        return _editor(
            request,
            session,
            user,
            survey,
            _form_values(survey),
            errors=[exc.detail],
            settings=settings,
            invitations=typed,
            status_code=exc.status,
        )
    return see_other(f"/work/surveys/{survey_id}?invited={len(created)}#invitations")
