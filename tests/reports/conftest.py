"""Fixtures for reports: the routers on the test app, codebook versions, stories with final codes
(ORM rows, as the review step writes them), and an independent oracle for the rollups."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import Codebook, CodebookVersion, Incident, IncidentCode, Survey
from app.models.reports import (
    ReportCodeDay,
    ReportCodeDayBy,
    ReportCodeDayDetail,
    ReportCodeDelta,
    ReportCodeGrouping,
    ReportCodeMonth,
    ReportCodeMonthBy,
    ReportCodeMonthDetail,
    ReportStoryDay,
    ReportStoryDayBy,
    ReportStoryDayDetail,
    ReportStoryDelta,
    ReportStoryGrouping,
    ReportStoryMonth,
    ReportStoryMonthBy,
    ReportStoryMonthDetail,
)
from app.reports import rollups

API = "/api/v1/reports"
CODES = ("complaint", "special_request", "extra_mile", "owner_error")


@pytest.fixture
def version_id(db: Callable[[], Any]) -> Callable[..., int]:
    """Factory: a codebook version (id) with the default codes, or the given ones."""
    counter = itertools.count(1)

    def make(
        codes: Iterable[str] = CODES, *, number: int = 1, note: str = "", key: str | None = None
    ) -> int:
        with db() as session:
            book_key = key or f"book-{next(counter)}"
            book = session.scalar(select(Codebook).where(Codebook.key == book_key))
            if book is None:
                book = Codebook(key=book_key, name=f"Codebook {book_key}", current_version=number)
                session.add(book)
                session.flush()
            version = CodebookVersion(
                codebook_id=book.id,
                number=number,
                content={
                    "key": book_key,
                    "name": book.name,
                    "codes": [{"key": c, "label": c.replace("_", " ").title()} for c in codes],
                },
                change_note=note,
                created_by="admin-1",
            )
            session.add(version)
            session.flush()
            return int(version.id)

    return make


@dataclass
class StorySpec:
    """One story to store; `codes` are its final codes (counted only when status is coded)."""

    survey_id: int
    day: date
    valence: str = "dissatisfying"
    codes: tuple[str, ...] = ()
    status: str | None = None  # default: coded when it has codes, else new
    touchpoint: str | None = None
    channel: str | None = None
    segment: str | None = None
    exclusion_reason: str | None = None
    finalized_at: datetime | None = None
    occurred_on: date | None = None
    hour: int = 12
    attributes: dict[str, Any] = field(default_factory=dict)


@pytest.fixture
def add_stories(db: Callable[[], Any]) -> Callable[..., list[int]]:
    """Factory: store stories (and their final codes) in one transaction; their ids."""
    counter = itertools.count(1)

    def add(specs: Iterable[StorySpec], version: int) -> list[int]:
        ids = []
        with db() as session:
            for spec in specs:
                attributes = dict(spec.attributes)
                if spec.segment is not None:
                    attributes["segment"] = spec.segment
                status = spec.status or ("coded" if spec.codes else "new")
                moment = datetime(
                    spec.day.year, spec.day.month, spec.day.day, spec.hour, tzinfo=UTC
                )
                incident = Incident(
                    survey_id=spec.survey_id,
                    submission_key=f"report-story-{next(counter)}",
                    what_happened="Something happened at the gate.",
                    valence=spec.valence,
                    touchpoint=spec.touchpoint,
                    channel=spec.channel,
                    language="en",
                    attributes=attributes,
                    redacted={},
                    redaction_spans={},
                    submitted_at=moment,
                    status=status,
                    exclusion_reason=spec.exclusion_reason,
                    finalized_at=spec.finalized_at or (moment if status == "coded" else None),
                    occurred_on=spec.occurred_on,
                )
                session.add(incident)
                session.flush()
                session.add_all(
                    IncidentCode(
                        incident_id=incident.id,
                        code=code,
                        codebook_version_id=version,
                        source="review",
                        confirmed_by="coder-1",
                    )
                    for code in spec.codes
                )
                session.flush()
                ids.append(int(incident.id))
        return ids

    return add


@pytest.fixture
def survey_id(make_survey: Callable[..., Survey]) -> int:
    return int(make_survey().id)


# --- Oracle: the rollups as they must be, computed in Python from the base rows -------------


def _dims(incident: Incident) -> tuple[Any, ...]:
    segment = incident.attributes.get("segment")
    return (
        incident.survey_id,
        incident.submitted_at.astimezone(UTC).date(),
        incident.valence,
        incident.touchpoint or "",
        incident.channel or "",
        "" if segment is None else str(segment),
    )


def expected_rollups(session: Session) -> dict[str, Counter[tuple[Any, ...]]]:
    """The rollup tables computed from `incidents` and `incident_codes` (test oracle); the
    monthly ones keyed by the month's first day."""
    incidents = {i.id: i for i in session.scalars(select(Incident))}
    detail_stories: Counter[tuple[Any, ...]] = Counter()
    narrow_stories: Counter[tuple[Any, ...]] = Counter()
    for incident in incidents.values():
        dims = _dims(incident)
        for measure, value in (
            ("stories", 1),
            ("confirmed", int(incident.status == "coded")),
            ("excluded", int(incident.status == "excluded")),
        ):
            detail_stories[(*dims, measure)] += value
            narrow_stories[(*dims[:3], measure)] += value
    detail_codes: Counter[tuple[Any, ...]] = Counter()
    narrow_codes: Counter[tuple[Any, ...]] = Counter()
    for code in session.scalars(select(IncidentCode)):
        incident = incidents[code.incident_id]
        if incident.status != "coded":
            continue
        dims = _dims(incident)
        detail_codes[(*dims, code.codebook_version_id, code.code)] += 1
        narrow_codes[(*dims[:3], code.codebook_version_id, code.code)] += 1
    return {
        "report_story_days": +narrow_stories,
        "report_story_days_detail": +detail_stories,
        "report_code_days": +narrow_codes,
        "report_code_days_detail": +detail_codes,
        "report_story_days_by": +_by_dimension(detail_stories),
        "report_code_days_by": +_by_dimension(detail_codes),
        "report_story_months": +_by_month(narrow_stories, 1),
        "report_code_months": +_by_month(narrow_codes, 1),
        "report_story_months_by": +_by_month(_by_dimension(detail_stories), 2),
        "report_code_months_by": +_by_month(_by_dimension(detail_codes), 2),
        "report_story_months_detail": +_by_month(detail_stories, 1),
        "report_code_months_detail": +_by_month(detail_codes, 1),
        "report_story_groupings": +_by_grouping(detail_stories),
        "report_code_groupings": +_by_grouping(detail_codes),
    }


def _by_grouping(detail: Counter[tuple[Any, ...]]) -> Counter[tuple[Any, ...]]:
    """(dimensions, grain, period start, valence, touchpoint, channel, segment, survey, measure)
    or (..., code, survey, codebook version) from the detail grain (a dimension outside the
    grouping as ''), for every grouping and grain of rollups.GROUPING_GRAINS."""
    grouped: Counter[tuple[Any, ...]] = Counter()
    for key, n in detail.items():
        survey, day, valence, *values = key[:6]
        rest = key[6:]
        for grouping, grain in rollups.GROUPING_GRAINS:
            kept = [
                v if d in grouping.split(",") else ""
                for d, v in zip(DIMENSIONS, values, strict=True)
            ]
            start = rollups.period_start(day, grain)  # type: ignore[arg-type]
            head = (grouping, grain, start, valence, *kept)
            if len(rest) == 1:  # a story measure
                grouped[(*head, survey, *rest)] += n
            else:  # codebook version, code
                grouped[(*head, rest[1], survey, rest[0])] += n
    return grouped


def _by_month(daily: Counter[tuple[Any, ...]], position: int) -> Counter[tuple[Any, ...]]:
    """The same counts with the day at `position` replaced by its month's first day."""
    months: Counter[tuple[Any, ...]] = Counter()
    for key, n in daily.items():
        months[(*key[:position], key[position].replace(day=1), *key[position + 1 :])] += n
    return months


DIMENSIONS = ("touchpoint", "channel", "segment")


def _by_dimension(detail: Counter[tuple[Any, ...]]) -> Counter[tuple[Any, ...]]:
    """(dimension, survey, day, valence, value, *rest) from the detail grain."""
    by: Counter[tuple[Any, ...]] = Counter()
    for key, n in detail.items():
        survey, day, valence, *values = key[:6]
        for dimension, value in zip(DIMENSIONS, values, strict=True):
            by[(dimension, survey, day, valence, value, *key[6:])] += n
    return by


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def stored_rollups(
    session: Session, *, with_deltas: bool = False
) -> dict[str, Counter[tuple[Any, ...]]]:
    """The rollup tables as stored, in the oracle's shape; `with_deltas` adds the pending
    delta rows, as every report reads them."""
    result: dict[str, Counter[tuple[Any, ...]]] = {}
    for table, dims in (
        (ReportStoryDay, ("survey_id", "day", "valence")),
        (ReportStoryDayDetail, ("survey_id", "day", "valence", "touchpoint", "channel", "segment")),
    ):
        counter: Counter[tuple[Any, ...]] = Counter()
        rows = list(session.scalars(select(table)))
        if with_deltas:
            rows += list(session.scalars(select(ReportStoryDelta)))
        for row in rows:
            key = tuple(_as_date(getattr(row, d)) if d == "day" else getattr(row, d) for d in dims)
            for measure in ("stories", "confirmed", "excluded"):
                counter[(*key, measure)] += getattr(row, measure)
        result[table.__tablename__] = counter
    for code_table, dims in (
        (ReportCodeDay, ("survey_id", "day", "valence")),
        (ReportCodeDayDetail, ("survey_id", "day", "valence", "touchpoint", "channel", "segment")),
    ):
        counter = Counter()
        code_rows = list(session.scalars(select(code_table)))
        if with_deltas:
            code_rows += list(session.scalars(select(ReportCodeDelta)))
        for row in code_rows:
            key = tuple(_as_date(getattr(row, d)) if d == "day" else getattr(row, d) for d in dims)
            counter[(*key, row.codebook_version_id, row.code)] += row.n
        result[code_table.__tablename__] = counter
    by_key = ("dimension", "survey_id", "day", "valence", "value")
    story_by: Counter[tuple[Any, ...]] = Counter()
    for row in session.scalars(select(ReportStoryDayBy)):
        key = tuple(_as_date(getattr(row, d)) if d == "day" else getattr(row, d) for d in by_key)
        for measure in ("stories", "confirmed", "excluded"):
            story_by[(*key, measure)] += getattr(row, measure)
    code_by: Counter[tuple[Any, ...]] = Counter()
    for row in session.scalars(select(ReportCodeDayBy)):
        key = tuple(_as_date(getattr(row, d)) if d == "day" else getattr(row, d) for d in by_key)
        code_by[(*key, row.codebook_version_id, row.code)] += row.n
    if with_deltas:  # update(), not +=: a delta may be negative
        story_by.update(_by_dimension(_delta_detail(session, ReportStoryDelta)))
        code_by.update(_by_dimension(_delta_detail(session, ReportCodeDelta)))
    result["report_story_days_by"] = story_by
    result["report_code_days_by"] = code_by
    month_by_key = ("dimension", "survey_id", "month", "valence", "value")
    month_detail = ("survey_id", "month", "valence", "touchpoint", "channel", "segment")
    for month_table, dims in (
        (ReportStoryMonth, ("survey_id", "month", "valence")),
        (ReportCodeMonth, ("survey_id", "month", "valence")),
        (ReportStoryMonthBy, month_by_key),
        (ReportCodeMonthBy, month_by_key),
        (ReportStoryMonthDetail, month_detail),
        (ReportCodeMonthDetail, month_detail),
    ):
        counter = Counter()
        for row in session.scalars(select(month_table)):
            key = tuple(
                _as_date(getattr(row, d)) if d == "month" else getattr(row, d) for d in dims
            )
            if month_table in (ReportStoryMonth, ReportStoryMonthBy, ReportStoryMonthDetail):
                for measure in ("stories", "confirmed", "excluded"):
                    counter[(*key, measure)] += getattr(row, measure)
            else:
                counter[(*key, row.codebook_version_id, row.code)] += row.n
        result[month_table.__tablename__] = counter
    for grouping_table in (ReportStoryGrouping, ReportCodeGrouping):
        counter = Counter()
        for row in session.scalars(select(grouping_table)):
            head = (
                row.dimensions,
                row.grain,
                _as_date(row.period_start),
                row.valence,
                row.touchpoint,
                row.channel,
                row.segment,
            )
            if isinstance(row, ReportStoryGrouping):
                for measure in ("stories", "confirmed", "excluded"):
                    counter[(*head, row.survey_id, measure)] += getattr(row, measure)
            else:
                counter[(*head, row.code, row.survey_id, row.codebook_version_id)] += row.n
        result[grouping_table.__tablename__] = counter
    if with_deltas:
        result["report_story_groupings"].update(
            _by_grouping(_delta_detail(session, ReportStoryDelta))
        )
        result["report_code_groupings"].update(
            _by_grouping(_delta_detail(session, ReportCodeDelta))
        )
    if with_deltas:  # the pending deltas, at the month grain
        pending = {
            "report_story_months": _narrow(_delta_detail(session, ReportStoryDelta), 3),
            "report_code_months": _narrow(_delta_detail(session, ReportCodeDelta), 3),
            "report_story_months_by": _by_dimension(_delta_detail(session, ReportStoryDelta)),
            "report_code_months_by": _by_dimension(_delta_detail(session, ReportCodeDelta)),
            "report_story_months_detail": _delta_detail(session, ReportStoryDelta),
            "report_code_months_detail": _delta_detail(session, ReportCodeDelta),
        }
        for table, deltas in pending.items():
            result[table].update(_by_month(deltas, 2 if table.endswith("_by") else 1))
    # Stored zero rows would be a leak of deleted data: the oracle drops zeros, so must we not.
    return result


def _narrow(detail: Counter[tuple[Any, ...]], width: int) -> Counter[tuple[Any, ...]]:
    """Detail-grain counts summed over the dimensions (keeping the first `width` key parts and
    the measure or code parts after the three dimensions)."""
    narrow: Counter[tuple[Any, ...]] = Counter()
    for key, n in detail.items():
        narrow[(*key[:width], *key[width + 3 :])] += n
    return narrow


def _delta_detail(session: Session, table: Any) -> Counter[tuple[Any, ...]]:
    detail = ("survey_id", "day", "valence", "touchpoint", "channel", "segment")
    counter: Counter[tuple[Any, ...]] = Counter()
    for row in session.scalars(select(table)):
        key = tuple(_as_date(getattr(row, d)) if d == "day" else getattr(row, d) for d in detail)
        if table is ReportStoryDelta:
            for measure in ("stories", "confirmed", "excluded"):
                counter[(*key, measure)] += getattr(row, measure)
        else:
            counter[(*key, row.codebook_version_id, row.code)] += row.n
    return counter


def zero_rows(session: Session) -> int:
    """Rollup rows whose counts are all zero (the triggers delete them)."""
    return sum(
        len(session.scalars(select(t).where(*conds)).all())
        for t, conds in (
            (ReportStoryDay, (ReportStoryDay.stories == 0,)),
            (ReportStoryDayDetail, (ReportStoryDayDetail.stories == 0,)),
            (ReportCodeDay, (ReportCodeDay.n == 0,)),
            (ReportCodeDayDetail, (ReportCodeDayDetail.n == 0,)),
            (ReportStoryDayBy, (ReportStoryDayBy.stories == 0,)),
            (ReportCodeDayBy, (ReportCodeDayBy.n == 0,)),
            (ReportStoryMonth, (ReportStoryMonth.stories == 0,)),
            (ReportCodeMonth, (ReportCodeMonth.n == 0,)),
            (ReportStoryMonthBy, (ReportStoryMonthBy.stories == 0,)),
            (ReportCodeMonthBy, (ReportCodeMonthBy.n == 0,)),
            (ReportStoryMonthDetail, (ReportStoryMonthDetail.stories == 0,)),
            (ReportCodeMonthDetail, (ReportCodeMonthDetail.n == 0,)),
            (ReportStoryGrouping, (ReportStoryGrouping.stories == 0,)),
            (ReportCodeGrouping, (ReportCodeGrouping.n == 0,)),
        )
    )


def pending_deltas(session: Session) -> int:
    return sum(
        int(session.scalar(select(func.count()).select_from(t)) or 0)
        for t in (ReportStoryDelta, ReportCodeDelta)
    )


@pytest.fixture
def assert_rollups_match(db: Callable[[], Any]) -> Callable[[], None]:
    """The rollups plus pending deltas (what reports read) equal a GROUP BY over the base
    tables; after a fold, the rollup tables alone do, with no delta and no zero row left."""

    def check() -> None:
        with db() as session:
            read, expected = stored_rollups(session, with_deltas=True), expected_rollups(session)
        for table in expected:
            assert +read[table] == expected[table], table
        with db() as session:
            rollups.fold(session)
        with db() as session:
            stored = stored_rollups(session)
            assert zero_rows(session) == 0
            assert pending_deltas(session) == 0
        for table in expected:
            assert +stored[table] == expected[table], table
            assert all(v >= 0 for v in stored[table].values()), table

    return check
