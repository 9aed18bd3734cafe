"""The coder's pages: home (queue, held and assigned stories, progress), coding a story, and
adjudication. Every rule lives in the services the JSON API uses (queue.next_story,
service.save_coding, service.adjudicate, to_reads with its blind-coding filter, etag)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth import Principal, RequireAdmin, RequireAnyRole, RequireResearcher
from app.db import SessionDep
from app.errors import AppError, PreconditionFailed
from app.incidents.redaction import text_views
from app.incidents.schemas import CodingRead
from app.incidents.service import View, etag, get_incident, resolve_view, to_reads
from app.models import ReviewLease, Suggestion, Survey
from app.models.base import utcnow
from app.pages import FormDep, FormFields, render, see_other
from app.reviews import overview, queue, service
from app.reviews.errors import PreconditionRequired
from app.reviews.schemas import AdjudicationUpdate
from app.reviews.workbench import (
    Choices,
    all_codes,
    answers,
    choices_from_coding,
    choices_from_form,
    code_rows,
    coding_update,
    custom_spans,
    parsed_codebook,
    validation_messages,
)

router = APIRouter(include_in_schema=False)
FINAL = ("coded", "excluded")


def _view(user: Principal, asked: str | None) -> View:
    if asked not in ("original", "redacted"):
        return resolve_view(user, None)
    return resolve_view(user, asked)  # type: ignore[arg-type]


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() and len(value) < 12 else None


def _problem_messages(exc: AppError) -> list[str]:
    listed = [str(e.get("msg")) for e in exc.extra.get("errors", []) if isinstance(e, dict)]
    return listed or [exc.detail]


# Home ----------------------------------------------------------------------------------------


@router.get("/work", response_class=HTMLResponse)
def home(request: Request, session: SessionDep, user: RequireAnyRole) -> Response:
    if user.role == "viewer":
        return see_other("/work/reports")
    if user.role == "case_manager":
        return see_other("/work/cases")
    params = request.query_params
    return render(
        request,
        "wb_home.html",
        {
            "o": overview.overview(session, user),
            "saved": _int(params.get("saved")),
            "empty": params.get("empty") == "1",
            "welcome": params.get("welcome") == "1",
            "released": _int(params.get("released")),
        },
        user=user,
        current="/work",
    )


def _next_or_home(
    session: Session, user: Principal, survey_id: int | None, saved: int | None = None
) -> Response:
    handed = queue.next_story(session, user, survey_id=survey_id)
    query = f"saved={saved}&" if saved else ""
    if handed is None:
        return see_other(f"/work?{query}empty=1")
    incident = handed.incident
    scope = f"queue={survey_id}&" if survey_id else ""
    return see_other(f"/work/stories/{incident.id}?{scope}{query}".rstrip("&?"))


@router.post("/work/next", response_class=HTMLResponse)
def code_next(form: FormDep, session: SessionDep, user: RequireResearcher) -> Response:
    """The next story from the review queue (held for the coder: a lease, as in the API)."""
    return _next_or_home(session, user, _int(form.get("survey_id")))


# Coding a story --------------------------------------------------------------------------------


def _coding_page(
    request: Request,
    session: Session,
    user: Principal,
    incident_id: int,
    view: View,
    *,
    choices: Choices | None = None,
    errors: list[str] | None = None,
    conflict: dict[str, Any] | None = None,
    queue_survey: int | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    incident = get_incident(session, incident_id)
    read = to_reads(session, [incident], view, user)[0]
    mine: CodingRead | None = next((c for c in read.codings if c.coder == user.name), None)
    # Blind double coding: to_reads shows other codings only once every required one is in.
    others = [c for c in read.codings if c.coder != user.name]
    codebook = parsed_codebook(service.codebook_version_for(session, incident.survey_id))
    rows = code_rows(codebook, read.suggestions)
    if choices is None:
        choices = choices_from_coding(mine)
    views = text_views(incident)
    lease_until = session.scalar(
        select(ReviewLease.expires_at).where(
            ReviewLease.incident_id == incident.id,
            ReviewLease.coder_id == user.id,
            ReviewLease.expires_at > utcnow(),
        )
    )
    survey_title = session.scalar(select(Survey.title).where(Survey.id == incident.survey_id))
    can_code = mine is not None or read.status not in FINAL
    saved = _int(request.query_params.get("saved"))
    shown = answers(read, views, {c: choices.spans.get(c, []) for c in choices.codes})
    return render(
        request,
        "wb_story.html",
        {
            "read": read,
            "survey_title": survey_title,
            "answers": shown,
            "custom": custom_spans(choices, shown),
            "rows": rows,
            "choices": choices,
            "mine": mine,
            "others": others,
            "etag": etag(session, incident, user.id),
            "view": view,
            "lease_until": lease_until,
            "can_code": can_code,
            "errors": errors or [],
            "conflict": conflict,
            "saved": saved,
            "queue_survey": queue_survey or _int(request.query_params.get("queue")),
            "code_labels": {c.key: c.label for c in codebook.codes},
        },
        user=user,
        current="/work",
        status_code=status_code,
    )


@router.get("/work/stories/{incident_id:int}", response_class=HTMLResponse)
def story(
    incident_id: int,
    request: Request,
    session: SessionDep,
    user: RequireResearcher,
    view: str | None = None,
) -> Response:
    return _coding_page(request, session, user, incident_id, _view(user, view))


def _suggested(session: Session, incident_id: int) -> set[str]:
    items = session.scalar(select(Suggestion.items).where(Suggestion.incident_id == incident_id))
    return {str(i["code"]) for i in items or [] if i.get("suggested")}


@router.post("/work/stories/{incident_id:int}", response_class=HTMLResponse)
def save_story(
    incident_id: int,
    request: Request,
    form: FormDep,
    session: SessionDep,
    user: RequireResearcher,
) -> Response:
    view = _view(user, form.get("view"))
    choices = choices_from_form(form)
    queue_survey = _int(form.get("queue_survey"))

    def again(errors: list[str], status: int, conflict: dict[str, Any] | None = None) -> Response:
        return _coding_page(
            request,
            session,
            user,
            incident_id,
            view,
            choices=choices,
            errors=errors,
            conflict=conflict,
            queue_survey=queue_survey,
            status_code=status,
        )

    get_incident(session, incident_id)
    try:
        update = coding_update(choices, _suggested(session, incident_id))
    except ValidationError as exc:
        return again(validation_messages(exc), 422)
    try:
        with session.begin_nested():
            service.save_coding(session, incident_id, update, user, form.get("if_match"), view)
    except (PreconditionFailed, PreconditionRequired):
        return again([], 409, _conflict(session, user, incident_id, view, choices))
    except AppError as exc:
        return again(_problem_messages(exc), exc.status)
    if form.get("action") == "next":
        return _next_or_home(session, user, queue_survey, saved=incident_id)
    return see_other(f"/work/stories/{incident_id}?saved={incident_id}")


def _conflict(
    session: Session, user: Principal, incident_id: int, view: View, yours: Choices
) -> dict[str, Any]:
    """What the other save holds beside what this form sent, row by row."""
    incident = get_incident(session, incident_id)
    read = to_reads(session, [incident], view, user)[0]
    mine = next((c for c in read.codings if c.coder == user.name), None)
    theirs = choices_from_coding(mine).summary() if mine else None
    ours = yours.summary()
    return {
        "saved_at": mine.updated_at if mine else None,
        "status": read.status,
        "rows": [
            (label, theirs[label] if theirs else "(nothing saved)", ours[label]) for label in ours
        ],
    }


@router.post("/work/stories/{incident_id:int}/release", response_class=HTMLResponse)
def release(incident_id: int, session: SessionDep, user: RequireResearcher) -> Response:
    """Give a held story back to the queue."""
    queue.release(session, user, incident_id)
    return see_other(f"/work?released={incident_id}")


# Adjudication ----------------------------------------------------------------------------------


@router.get("/work/adjudication", response_class=HTMLResponse)
def adjudication_list(
    request: Request, session: SessionDep, user: RequireAdmin, cursor: str | None = None
) -> Response:
    page = service.adjudication_queue(session, survey_id=None, cursor=cursor, limit=50, user=user)
    return render(
        request,
        "wb_adjudication_list.html",
        {"page": page, "done": _int(request.query_params.get("done"))},
        user=user,
        current="/work/adjudication",
    )


def _adjudication_page(
    request: Request,
    session: Session,
    user: Principal,
    incident_id: int,
    *,
    errors: list[str] | None = None,
    form: FormFields | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    incident = get_incident(session, incident_id)
    read = to_reads(session, [incident], "original", user)[0]
    codebook = parsed_codebook(service.codebook_version_for(session, incident.survey_id))
    codings = read.codings
    sets = [set() if c.excluded else {d.code for d in c.codes} for c in codings]
    common = set.intersection(*sets) if sets else set()
    marks = {
        f"c{i}": [(s.field, s.start, s.end) for d in c.codes for s in d.spans]
        for i, c in enumerate(codings)
    }
    chosen = set(form.getlist("code")) if form is not None else (set(common) if codings else set())
    return render(
        request,
        "wb_adjudicate.html",
        {
            "read": read,
            "codings": codings,
            "common": common,
            "differ": len({(c.excluded, frozenset(s)) for c, s in zip(codings, sets, strict=True)})
            > 1,
            "answers": answers(read, text_views(incident), marks, with_evidence=False),
            "codes": all_codes(codebook),
            "labels": {c.key: c.label for c in codebook.codes},
            "chosen": chosen,
            "form": form,
            "etag": etag(session, incident, user.id),
            "errors": errors or [],
            "survey_title": session.scalar(
                select(Survey.title).where(Survey.id == incident.survey_id)
            ),
        },
        user=user,
        current="/work/adjudication",
        status_code=status_code,
    )


@router.get("/work/adjudication/{incident_id:int}", response_class=HTMLResponse)
def adjudication(
    incident_id: int, request: Request, session: SessionDep, user: RequireAdmin
) -> Response:
    return _adjudication_page(request, session, user, incident_id)


def _decision(form: FormFields, codings: list[CodingRead]) -> AdjudicationUpdate:
    take = _int(form.get("take"))
    note = form.get("note") or None
    if take is not None and 0 <= take < len(codings):
        side = codings[take]
        if side.excluded:
            return AdjudicationUpdate(
                exclude=True, exclusion_reason=side.exclusion_reason or "excluded", note=note
            )
        return AdjudicationUpdate(codes=[d.code for d in side.codes], note=note)
    if form.get("exclude") == "1":
        return AdjudicationUpdate(
            exclude=True, exclusion_reason=form.get("exclusion_reason").strip() or None, note=note
        )
    return AdjudicationUpdate(codes=list(dict.fromkeys(form.getlist("code"))), note=note)


@router.post("/work/adjudication/{incident_id:int}", response_class=HTMLResponse)
def adjudicate(
    incident_id: int, request: Request, form: FormDep, session: SessionDep, user: RequireAdmin
) -> Response:
    incident = get_incident(session, incident_id)
    codings = to_reads(session, [incident], "original", user)[0].codings
    try:
        decision = _decision(form, codings)
    except ValidationError as exc:
        return _adjudication_page(
            request,
            session,
            user,
            incident_id,
            errors=validation_messages(exc),
            form=form,
            status_code=422,
        )
    try:
        with session.begin_nested():
            service.adjudicate(
                session, incident_id, decision, user, form.get("if_match"), "original"
            )
    except (PreconditionFailed, PreconditionRequired):
        return _adjudication_page(
            request,
            session,
            user,
            incident_id,
            errors=[
                "The story changed while you were deciding (a coder revised a coding, or "
                "another admin decided). Check the codings below and decide again."
            ],
            form=form,
            status_code=409,
        )
    except AppError as exc:
        return _adjudication_page(
            request,
            session,
            user,
            incident_id,
            errors=_problem_messages(exc),
            form=form,
            status_code=exc.status,
        )
    following = service.adjudication_queue(session, survey_id=None, cursor=None, limit=1, user=user)
    if following.items:
        return see_other(f"/work/adjudication/{following.items[0].id}?done={incident_id}")
    return see_other(f"/work/adjudication?done={incident_id}")
