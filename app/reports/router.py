"""Report API: trends (JSON or CSV), the CIT study report (JSON, Markdown, HTML), survey list.

Every answer carries an ETag (a hash of its body) and `Cache-Control: private, max-age=30`, so a
polling dashboard gets `304 Not Modified` while nothing changed. The trends report and the tables
come from the process's report cache (app.reports.cache) while their inputs are unchanged: a
repeat, or an If-None-Match, costs one read of the inputs' state, not the report. Any role may
read reports: viewers see aggregates only, and the trends are suppressed for everyone (small
cells)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import date
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from app import negotiation, pages
from app.auth import RequireAnyRole
from app.config import app_settings
from app.db import SessionDep
from app.errors import Forbidden, Invalid, NotFound, Unauthorized, problem_responses
from app.exports.formats import csv_chunks
from app.exports.report_tables import study_csv
from app.models import Survey
from app.params import IsoDate
from app.reports import cache as report_cache
from app.reports import render, rollups, tables
from app.reports.cache import Answer, ReportCache
from app.reports.rollups import PERIODS, TABLE_PERIODS, Period
from app.reports.schemas import ReportSurvey, StudyReport, TrendsReport
from app.reports.study import study_report
from app.reports.trends import (
    TrendsQuery,
    collector_paused,
    parse_group_by,
    trends_data,
    trends_report,
)

router = APIRouter(prefix="/api/v1/reports", tags=["reports"])

CACHE_CONTROL = "private, max-age=30"
MEDIA_TYPES = {
    "json": "application/json",
    "csv": "text/csv",
    "markdown": "text/markdown",
    "html": "text/html",
}
ERRORS = problem_responses(
    Invalid, Unauthorized, Forbidden, NotFound, negotiation.NotAcceptable, negotiation.UnknownFormat
)

TRENDS_DESCRIPTION = """
Counts and shares of **confirmed stories by final code** per period (`day`, `week` starting on
Monday, `month`, `quarter`; the period of a story is the UTC date it was submitted), split by
valence and optionally grouped by `survey`, `touchpoint`, `channel` and/or `segment`.

- `count`: confirmed stories (status coded) of the cell (period x valence x group) that carry the
  code; `base`: the confirmed stories of that cell: **the share's denominator**;
  `share = count / base`, with its Wilson 95% interval (`ci_low`, `ci_high`). A story may carry
  several codes, so shares of one cell do not add up to 1.
- `totals` (per cell) and `periods` (per period, in total and per valence) give stories
  reported, confirmed and excluded, and `confirmed_share = confirmed / (stories - excluded)`:
  how final the period's figures are.
- `change_from_previous`: the share minus the previous period's, pooled two-proportion z-test.
- Counts below the minimum cell size (`CIT_MIN_CELL`, default 5) are `null` with
  `suppressed: true`, and so are the figures built on them; further counts are hidden where a
  hidden one could be recovered by subtraction from totals or other cells, **also across report
  shapes**: the same report ungrouped, and at the finer period (a quarter is the sum of its
  months), so a June hidden in the month report does not
  come back as the quarter minus April and May. `suppress=false` gives the team (admins and
  researchers, who can read the stories) exact figures; viewers get 403, and 403 for
  `period=day` and `period=week` too (a week straddles two months; month and quarter nest).
- `from`/`to` are snapped to whole periods. With `codebook_version_id` every final code of that
  version's codebook counts, mapped into that version (renames, merges, splits), each story
  once; parent codes get roll-up rows (`level: rollup`). The base stays all confirmed stories of
  the cell.

Figures are **shares of reported incidents, not prevalence** (the `note` field says so too).
JSON by default; CSV (tidy rows) with `Accept: text/csv` or `format=csv`.
"""


def require_team_for_unsuppressed(role: str, suppress: bool, period: str = "month") -> None:
    """Viewers read aggregates only: small cells stay hidden for them whatever they ask, and
    only in period lengths that nest (day, month, quarter): a week straddles two months, so a
    month minus its whole weeks would give a hidden part-week away."""
    team = role in ("admin", "researcher")
    if not suppress and not team:
        raise Forbidden("unsuppressed reports are for admins and researchers")
    if period in ("day", "week") and not team:
        raise Forbidden(
            "daily and weekly figures are for the team: suppression is kept consistent across "
            "months, quarters and the whole range (a week straddles two months); choose month "
            "or quarter"
        )


def _min_cell(request: Request) -> int:
    return app_settings(request).min_cell


def negotiate(request: Request, asked: str | None, offered: tuple[str, ...]) -> str:
    """See app.negotiation: a wrong `format` is 422, an Accept nothing matches is 406."""
    return negotiation.negotiate(request, asked, offered)


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return etag in tags


def answer_of(body: bytes, media_type: str, **headers: str) -> Answer:
    """A finished response: the body, its ETag (a hash of it), media type and headers."""
    etag = '"' + hashlib.sha256(body).hexdigest()[:40] + '"'
    return Answer(body, etag, media_type, tuple(headers.items()))


def respond(request: Request, answer: Answer) -> Response:
    """The body with its ETag, or 304 when the client holds this very body."""
    common = {
        "ETag": answer.etag,
        "Cache-Control": CACHE_CONTROL,
        "Vary": "Accept, Authorization, Cookie",
        **dict(answer.headers),
    }
    if _etag_matches(request.headers.get("if-none-match"), answer.etag):
        return Response(status_code=304, headers=common)
    return Response(answer.body, media_type=answer.media_type, headers=common)


def cached(request: Request, body: bytes, media_type: str, **headers: str) -> Response:
    return respond(request, answer_of(body, media_type, **headers))


def _query_key(query: TrendsQuery) -> tuple[Any, ...]:
    """A query as the computation sees it: from/to as snapped to whole periods."""
    return (
        query.period,
        query.group_by,
        query.survey_id,
        query.first_day,
        query.last_day,
        query.codebook_version_id,
        query.bitner_groups,
        query.cooccurrence,
    )


def from_cache(
    request: Request,
    session: Session,
    what: tuple[Any, ...],
    compute: Callable[[], Answer],
) -> Response:
    """The answer to `what` (route, format, query, suppression, `CIT_MIN_CELL`) from the
    process's report cache while the report's inputs are as they were when it was computed, else
    computed (and kept). The caller has checked the role and the survey: the body depends on
    `suppress`, not on who asks, and a viewer cannot ask for `suppress=false`."""
    cache: ReportCache = request.app.state.report_cache
    if not cache.enabled:
        return respond(request, compute())
    # Read before computing: the body is never older than the state it is kept under.
    key = (
        *what,
        rollups.MONTHLY_READS,
        report_cache.input_state(session),
    )
    return respond(request, cache.answer(key, compute))


def _json(data: Any) -> bytes:
    return orjson.dumps(data)


@router.get(
    "/trends",
    response_model=TrendsReport,
    summary="Shares of confirmed stories by code, per period and valence",
    description=TRENDS_DESCRIPTION,
    responses={
        **ERRORS,
        200: {"content": {"text/csv": {"schema": {"type": "string"}}}},
        304: {"description": "Not modified (If-None-Match matched the ETag)"},
    },
)
def get_trends(
    request: Request,
    session: SessionDep,
    user: RequireAnyRole,
    period: Annotated[Period, Query(description=", ".join(PERIODS))] = "month",
    group_by: Annotated[
        list[str] | None,
        Query(description="survey, touchpoint, channel, segment: repeat or comma-separate"),
    ] = None,
    survey_id: int | None = None,
    date_from: Annotated[IsoDate | None, Query(alias="from")] = None,
    date_to: Annotated[IsoDate | None, Query(alias="to")] = None,
    codebook_version_id: int | None = None,
    suppress: Annotated[
        bool,
        Query(description="false: exact figures, for the team (admins and researchers) only"),
    ] = True,
    format: Annotated[Literal["json", "csv"] | None, Query()] = None,
) -> Response:
    chosen = negotiate(request, format, ("json", "csv"))
    require_team_for_unsuppressed(user.role, suppress, period)
    if survey_id is not None and session.get(Survey, survey_id) is None:
        raise NotFound(f"survey {survey_id} not found")
    query = TrendsQuery(
        period=period,
        group_by=parse_group_by(group_by or []),
        survey_id=survey_id,
        date_from=date_from,
        date_to=date_to,
        codebook_version_id=codebook_version_id,
    )
    min_cell = _min_cell(request)

    def compute() -> Answer:
        if chosen == "csv":
            report = trends_report(session, query, min_cell=min_cell, suppress=suppress)
            return answer_of(
                render.trends_csv(report).encode(),
                "text/csv; charset=utf-8",
                **{
                    "Content-Disposition": 'inline; filename="cit-trends.csv"',
                    "X-Report-Note": report.note,
                },
            )
        # The plain data is the model's dump (trends_data), written without a model per row,
        # and dropped before the garbage collector runs again (collector_paused).
        with collector_paused():
            body = _json(trends_data(session, query, min_cell=min_cell, suppress=suppress))
        return answer_of(body, MEDIA_TYPES["json"])

    what = ("trends", chosen, _query_key(query), suppress, min_cell)
    return from_cache(request, session, what, compute)


TABLES_DESCRIPTION = """
The trends report (`/trends`, same parameters and definitions) read as a table, so that its
figures and its suppression are exactly the trends': a cell hidden there is hidden here, and
the protection across groupings and period lengths holds. Per period (default `quarter`) and
valence. JSON, or tidy CSV rows (`format=csv` or `Accept: text/csv`).
"""


def _table_query(
    session: SessionDep,
    user: Any,
    *,
    period: Period,
    group_by: tuple[str, ...],
    survey_id: int | None,
    date_from: date | None,
    date_to: date | None,
    codebook_version_id: int | None,
    suppress: bool,
    **flags: bool,
) -> TrendsQuery:
    require_team_for_unsuppressed(user.role, suppress, period)
    if survey_id is not None and session.get(Survey, survey_id) is None:
        raise NotFound(f"survey {survey_id} not found")
    return TrendsQuery(
        period=period,
        group_by=parse_group_by(list(group_by)),
        survey_id=survey_id,
        date_from=date_from,
        date_to=date_to,
        codebook_version_id=codebook_version_id,
        **flags,
    )


def _table_response(
    request: Request,
    session: Session,
    chosen: str,
    query: TrendsQuery,
    suppress: bool,
    build: Callable[..., dict[str, Any]],
    header: list[str],
    rows: Any,
    name: str,
) -> Response:
    """A table built from the trends report (`build`: crosstab, bitner_table, cooccurrence),
    as JSON or CSV, through the report cache."""
    min_cell = _min_cell(request)

    def compute() -> Answer:
        table = build(session, query, min_cell=min_cell, suppress=suppress)
        if chosen == "csv":
            return answer_of(
                b"".join(csv_chunks(header, rows(table))),
                "text/csv; charset=utf-8",
                **{"Content-Disposition": f'inline; filename="cit-{name}.csv"'},
            )
        return answer_of(_json(table), MEDIA_TYPES["json"])

    return from_cache(
        request, session, (name, chosen, _query_key(query), suppress, min_cell), compute
    )


PeriodQuery = Annotated[
    Period, Query(description=", ".join(TABLE_PERIODS) + " (all: the whole range as one)")
]
FromQuery = Annotated[IsoDate | None, Query(alias="from")]
ToQuery = Annotated[IsoDate | None, Query(alias="to")]
SuppressQuery = Annotated[
    bool, Query(description="false: exact figures, for the team (admins and researchers) only")
]
TableFormat = Annotated[Literal["json", "csv"] | None, Query()]
TABLE_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    200: {"content": {"text/csv": {"schema": {"type": "string"}}}},
    304: {"description": "Not modified (If-None-Match matched the ETag)"},
}


@router.get(
    "/crosstab",
    summary="Codes x touchpoint, channel or segment, per period and valence",
    description=TABLES_DESCRIPTION
    + "\nRows: codes (with parent roll-ups under `codebook_version_id`); columns: the values "
    "of `by`; a cell: confirmed stories of that value carrying the code, over the confirmed "
    "stories of that value (`base`).",
    responses=TABLE_RESPONSES,
)
def get_crosstab(
    request: Request,
    session: SessionDep,
    user: RequireAnyRole,
    by: Annotated[Literal["touchpoint", "channel", "segment"], Query()],
    period: PeriodQuery = "quarter",
    survey_id: int | None = None,
    date_from: FromQuery = None,
    date_to: ToQuery = None,
    codebook_version_id: int | None = None,
    suppress: SuppressQuery = True,
    format: TableFormat = None,
) -> Response:
    chosen = negotiate(request, format, ("json", "csv"))
    query = _table_query(
        session,
        user,
        period=period,
        group_by=(by,),
        survey_id=survey_id,
        date_from=date_from,
        date_to=date_to,
        codebook_version_id=codebook_version_id,
        suppress=suppress,
    )
    return _table_response(
        request,
        session,
        chosen,
        query,
        suppress,
        tables.crosstab,
        tables.CROSSTAB_HEADER,
        tables.crosstab_rows,
        f"crosstab-{by}",
    )


@router.get(
    "/bitner",
    summary="The category table: Bitner group x valence, per period",
    description=TABLES_DESCRIPTION
    + "\nStories carrying any code of a Bitner group (a child code counts in its parent's "
    "group), each story once, under `codebook_version_id` (default: the current version of the "
    "survey's codebook).",
    responses=TABLE_RESPONSES,
)
def get_bitner(
    request: Request,
    session: SessionDep,
    user: RequireAnyRole,
    period: PeriodQuery = "quarter",
    survey_id: int | None = None,
    date_from: FromQuery = None,
    date_to: ToQuery = None,
    codebook_version_id: int | None = None,
    suppress: SuppressQuery = True,
    format: TableFormat = None,
) -> Response:
    chosen = negotiate(request, format, ("json", "csv"))
    query = _table_query(
        session,
        user,
        period=period,
        group_by=(),
        survey_id=survey_id,
        date_from=date_from,
        date_to=date_to,
        codebook_version_id=tables.version_for(session, survey_id, codebook_version_id),
        suppress=suppress,
        bitner_groups=True,
    )
    return _table_response(
        request,
        session,
        chosen,
        query,
        suppress,
        tables.bitner_table,
        tables.BITNER_HEADER,
        tables.bitner_rows,
        "bitner",
    )


@router.get(
    "/cooccurrence",
    summary="Code co-occurrence: stories carrying both codes, per period and valence",
    description=TABLES_DESCRIPTION
    + "\nA symmetric matrix per period and valence; the diagonal is the stories carrying the "
    "code (the trends' count).",
    responses=TABLE_RESPONSES,
)
def get_cooccurrence(
    request: Request,
    session: SessionDep,
    user: RequireAnyRole,
    period: PeriodQuery = "quarter",
    survey_id: int | None = None,
    date_from: FromQuery = None,
    date_to: ToQuery = None,
    codebook_version_id: int | None = None,
    suppress: SuppressQuery = True,
    format: TableFormat = None,
) -> Response:
    chosen = negotiate(request, format, ("json", "csv"))
    query = _table_query(
        session,
        user,
        period=period,
        group_by=(),
        survey_id=survey_id,
        date_from=date_from,
        date_to=date_to,
        codebook_version_id=codebook_version_id,
        suppress=suppress,
        cooccurrence=True,
    )
    return _table_response(
        request,
        session,
        chosen,
        query,
        suppress,
        tables.cooccurrence,
        tables.COOCCURRENCE_HEADER,
        tables.cooccurrence_rows,
        "cooccurrence",
    )


@router.get(
    "/study",
    response_model=StudyReport,
    summary="The CIT reporting checklist filled from a survey's data",
    description=(
        "Gremler's (2004) checklist: incident definition and inclusion criteria, the questions "
        "asked, respondents and stories (invitations sent and used), valence split, included "
        "and excluded stories with reasons, context, time since the incident, codebook versions "
        "with change notes, stories per final code, number of coders, reliability, and a "
        "saturation curve (distinct codes against stories coded in order of finalization, with "
        "Flanagan's rule: the last 100 stories added at most 3 new codes). JSON, Markdown "
        "(`format=markdown` or `Accept: text/markdown`) or HTML (`format=html` or "
        "`Accept: text/html`). For viewers, counts below the minimum cell size are suppressed."
    ),
    responses={
        **ERRORS,
        200: {"content": {"text/markdown": {}, "text/html": {}, "text/csv": {}}},
        304: {"description": "Not modified (If-None-Match matched the ETag)"},
    },
)
def get_study(
    request: Request,
    session: SessionDep,
    user: RequireAnyRole,
    survey_id: int,
    saturation_step: Annotated[int | None, Query(ge=1, le=100_000)] = None,
    format: Annotated[Literal["json", "markdown", "html", "csv"] | None, Query()] = None,
) -> Response:
    chosen = negotiate(request, format, ("json", "markdown", "html", "csv"))
    report = study_report(
        session,
        survey_id,
        suppress=user.role == "viewer",
        min_cell=_min_cell(request),
        saturation_step=saturation_step,
    )
    if chosen == "markdown":
        body = render.study_markdown(report).encode()
        return cached(request, body, "text/markdown; charset=utf-8")
    if chosen == "html":
        page = pages.render(
            request,
            "study_report.html",
            {"survey": report["survey"], "doc": render.study_document(report)},
            user=user,
            current="/work/reports",
        )
        return cached(request, bytes(page.body), "text/html; charset=utf-8")
    if chosen == "csv":
        return cached(request, study_csv(report), "text/csv; charset=utf-8")
    return cached(request, _json(report), MEDIA_TYPES["json"])


@router.get(
    "/surveys",
    response_model=list[ReportSurvey],
    summary="Surveys that reports can be filtered by (for the dashboard)",
    responses=ERRORS,
)
def get_report_surveys(request: Request, session: SessionDep, _user: RequireAnyRole) -> Response:
    rows = session.execute(
        select(Survey.id, Survey.title, Survey.slug, Survey.status).order_by(Survey.id)
    ).all()
    surveys = [ReportSurvey(id=r.id, title=r.title, slug=r.slug, status=r.status) for r in rows]
    return cached(request, _json([s.model_dump() for s in surveys]), MEDIA_TYPES["json"])
