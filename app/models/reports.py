"""Daily and monthly report rollups, and the delta rows that database triggers append with each
change.

Derived data only. The triggers (migration 0006) append one signed row per change of
`incidents` or `incident_codes` to `report_story_deltas` / `report_code_deltas`, in the same
transaction as the change; an append never waits on another transaction, so no submission
queues behind another on a shared counter row. The worker folds the deltas into the rollup
tables every round (`app.reports.rollups.fold`), and every report reads rollup plus pending
deltas in one statement, so figures are exact the moment a change commits.
`app.reports.rollups.rebuild` recomputes the rollups from scratch. No code writes them otherwise.
Each table has a narrow form (survey, day, valence: what an ungrouped report reads, a few
thousand rows for a million stories) and a `_detail` form that adds the grouping dimensions. A
missing touchpoint, channel or segment is stored as '' so that the primary key, and with it the
fold's upsert, is NULL-safe. `day` is the story's `submitted_at` date in UTC.
The `_months` tables hold the same sums per calendar month (`month`: its first day), folded from
the same delta rows in the same transaction: month, quarter and whole-range reports read them.
The `_groupings` tables hold the monthly detail summed per grouping of two or three dimensions,
per month or quarter, keyed in the order a report groups by (see `ReportStoryGrouping`).
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base

# Clustered by their key on SQLite (a report reads a key range; no rowid to maintain).
_WITHOUT_ROWID = {"sqlite_with_rowid": False}


class ReportStoryDay(Base):
    """Stories per survey, day and valence: all reported, confirmed (status coded), excluded."""

    __tablename__ = "report_story_days"
    __table_args__ = _WITHOUT_ROWID

    survey_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    day: Mapped[date] = mapped_column(primary_key=True)
    valence: Mapped[str] = mapped_column(String(16), primary_key=True)
    stories: Mapped[int]
    confirmed: Mapped[int]
    excluded: Mapped[int]


class ReportStoryDayDetail(Base):
    """As `report_story_days`, also by touchpoint, channel and segment ('' when not given)."""

    __tablename__ = "report_story_days_detail"
    __table_args__ = _WITHOUT_ROWID

    survey_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    day: Mapped[date] = mapped_column(primary_key=True)
    valence: Mapped[str] = mapped_column(String(16), primary_key=True)
    touchpoint: Mapped[str] = mapped_column(String(200), primary_key=True)
    channel: Mapped[str] = mapped_column(String(200), primary_key=True)
    segment: Mapped[str] = mapped_column(String(200), primary_key=True)
    stories: Mapped[int]
    confirmed: Mapped[int]
    excluded: Mapped[int]


class ReportCodeDay(Base):
    """Confirmed stories carrying a final code, per survey, day, valence and codebook version.

    Only stories whose status is `coded` count, so a code count never exceeds the confirmed
    stories of its cell (the share's denominator)."""

    __tablename__ = "report_code_days"
    __table_args__ = _WITHOUT_ROWID

    survey_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    day: Mapped[date] = mapped_column(primary_key=True)
    valence: Mapped[str] = mapped_column(String(16), primary_key=True)
    codebook_version_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    code: Mapped[str] = mapped_column(String(100), primary_key=True)
    n: Mapped[int]


class ReportCodeDayDetail(Base):
    """As `report_code_days`, also by touchpoint, channel and segment ('' when not given)."""

    __tablename__ = "report_code_days_detail"
    __table_args__ = _WITHOUT_ROWID

    survey_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    day: Mapped[date] = mapped_column(primary_key=True)
    valence: Mapped[str] = mapped_column(String(16), primary_key=True)
    touchpoint: Mapped[str] = mapped_column(String(200), primary_key=True)
    channel: Mapped[str] = mapped_column(String(200), primary_key=True)
    segment: Mapped[str] = mapped_column(String(200), primary_key=True)
    codebook_version_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    code: Mapped[str] = mapped_column(String(100), primary_key=True)
    n: Mapped[int]


class ReportStoryDelta(Base):
    """+1/-1 changes to the story rollups, at the detail grain, not yet folded in."""

    __tablename__ = "report_story_deltas"

    id: Mapped[int] = mapped_column(primary_key=True)
    survey_id: Mapped[int]
    day: Mapped[date]
    valence: Mapped[str] = mapped_column(String(16))
    touchpoint: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(200))
    segment: Mapped[str] = mapped_column(String(200))
    stories: Mapped[int]
    confirmed: Mapped[int]
    excluded: Mapped[int]


class ReportCodeDelta(Base):
    """+1/-1 changes to the code rollups, at the detail grain, not yet folded in."""

    __tablename__ = "report_code_deltas"

    id: Mapped[int] = mapped_column(primary_key=True)
    survey_id: Mapped[int]
    day: Mapped[date]
    valence: Mapped[str] = mapped_column(String(16))
    touchpoint: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(200))
    segment: Mapped[str] = mapped_column(String(200))
    codebook_version_id: Mapped[int]
    code: Mapped[str] = mapped_column(String(100))
    n: Mapped[int]


class ReportStoryDayBy(Base):
    """As `report_story_days`, also by the value of one dimension (touchpoint, channel or
    segment; '' when not given): what a report grouped by one of them reads, a few rows per
    value and day instead of one per combination of all three."""

    __tablename__ = "report_story_days_by"
    __table_args__ = _WITHOUT_ROWID

    dimension: Mapped[str] = mapped_column(String(16), primary_key=True)
    survey_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    day: Mapped[date] = mapped_column(primary_key=True)
    valence: Mapped[str] = mapped_column(String(16), primary_key=True)
    value: Mapped[str] = mapped_column(String(200), primary_key=True)
    stories: Mapped[int]
    confirmed: Mapped[int]
    excluded: Mapped[int]


class ReportCodeDayBy(Base):
    """As `report_code_days`, also by the value of one dimension (see `ReportStoryDayBy`)."""

    __tablename__ = "report_code_days_by"
    __table_args__ = _WITHOUT_ROWID

    dimension: Mapped[str] = mapped_column(String(16), primary_key=True)
    survey_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    day: Mapped[date] = mapped_column(primary_key=True)
    valence: Mapped[str] = mapped_column(String(16), primary_key=True)
    value: Mapped[str] = mapped_column(String(200), primary_key=True)
    codebook_version_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    code: Mapped[str] = mapped_column(String(100), primary_key=True)
    n: Mapped[int]


class ReportStoryMonth(Base):
    """As `report_story_days`, per month (`month`: its first day): what an ungrouped month,
    quarter or whole-range report reads, a thirtieth of the daily rows."""

    __tablename__ = "report_story_months"
    __table_args__ = _WITHOUT_ROWID

    survey_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    month: Mapped[date] = mapped_column(primary_key=True)
    valence: Mapped[str] = mapped_column(String(16), primary_key=True)
    stories: Mapped[int]
    confirmed: Mapped[int]
    excluded: Mapped[int]


class ReportCodeMonth(Base):
    """As `report_code_days`, per month (see `ReportStoryMonth`)."""

    __tablename__ = "report_code_months"
    __table_args__ = _WITHOUT_ROWID

    survey_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    month: Mapped[date] = mapped_column(primary_key=True)
    valence: Mapped[str] = mapped_column(String(16), primary_key=True)
    codebook_version_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    code: Mapped[str] = mapped_column(String(100), primary_key=True)
    n: Mapped[int]


class ReportStoryMonthBy(Base):
    """As `report_story_days_by`, per month: what a month, quarter or whole-range report
    grouped by one dimension reads (about 4,000 rows per dimension at a million stories over
    two years, against 124,000 daily ones)."""

    __tablename__ = "report_story_months_by"
    __table_args__ = _WITHOUT_ROWID

    dimension: Mapped[str] = mapped_column(String(16), primary_key=True)
    survey_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    month: Mapped[date] = mapped_column(primary_key=True)
    valence: Mapped[str] = mapped_column(String(16), primary_key=True)
    value: Mapped[str] = mapped_column(String(200), primary_key=True)
    stories: Mapped[int]
    confirmed: Mapped[int]
    excluded: Mapped[int]


class ReportCodeMonthBy(Base):
    """As `report_code_days_by`, per month (see `ReportStoryMonthBy`)."""

    __tablename__ = "report_code_months_by"
    __table_args__ = _WITHOUT_ROWID

    dimension: Mapped[str] = mapped_column(String(16), primary_key=True)
    survey_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    month: Mapped[date] = mapped_column(primary_key=True)
    valence: Mapped[str] = mapped_column(String(16), primary_key=True)
    value: Mapped[str] = mapped_column(String(200), primary_key=True)
    codebook_version_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    code: Mapped[str] = mapped_column(String(100), primary_key=True)
    n: Mapped[int]


class ReportStoryMonthDetail(Base):
    """As `report_story_days_detail`, per month: what a month, quarter or whole-range report
    grouped by two or more dimensions reads (touchpoint x channel x segment combinations per
    month, instead of per day)."""

    __tablename__ = "report_story_months_detail"
    __table_args__ = _WITHOUT_ROWID

    survey_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    month: Mapped[date] = mapped_column(primary_key=True)
    valence: Mapped[str] = mapped_column(String(16), primary_key=True)
    touchpoint: Mapped[str] = mapped_column(String(200), primary_key=True)
    channel: Mapped[str] = mapped_column(String(200), primary_key=True)
    segment: Mapped[str] = mapped_column(String(200), primary_key=True)
    stories: Mapped[int]
    confirmed: Mapped[int]
    excluded: Mapped[int]


class ReportCodeMonthDetail(Base):
    """As `report_code_days_detail`, per month (see `ReportStoryMonthDetail`)."""

    __tablename__ = "report_code_months_detail"
    __table_args__ = _WITHOUT_ROWID

    survey_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    month: Mapped[date] = mapped_column(primary_key=True)
    valence: Mapped[str] = mapped_column(String(16), primary_key=True)
    touchpoint: Mapped[str] = mapped_column(String(200), primary_key=True)
    channel: Mapped[str] = mapped_column(String(200), primary_key=True)
    segment: Mapped[str] = mapped_column(String(200), primary_key=True)
    codebook_version_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    code: Mapped[str] = mapped_column(String(100), primary_key=True)
    n: Mapped[int]


class ReportStoryGrouping(Base):
    """The detail rollup summed per grouping of two or three dimensions and per month or
    quarter (`grain`), keyed in the order a report groups by (dimensions, grain, period, valence,
    the dimensions, then the survey), so that a month report by touchpoint x channel or a
    quarter report by all three reads its own rows in key order instead of sorting the monthly
    detail. `dimensions` names the grouping ('touchpoint,channel', 'touchpoint,segment',
    'channel,segment' at both grains, 'touchpoint,channel,segment' per quarter only: per month
    that is `report_story_months_detail`); a dimension outside the grouping is stored as ''.
    Folded from the same delta rows in the same transaction as the other rollups."""

    __tablename__ = "report_story_groupings"
    __table_args__ = _WITHOUT_ROWID

    dimensions: Mapped[str] = mapped_column(String(40), primary_key=True)
    grain: Mapped[str] = mapped_column(String(8), primary_key=True)
    period_start: Mapped[date] = mapped_column(primary_key=True)
    valence: Mapped[str] = mapped_column(String(16), primary_key=True)
    touchpoint: Mapped[str] = mapped_column(String(200), primary_key=True)
    channel: Mapped[str] = mapped_column(String(200), primary_key=True)
    segment: Mapped[str] = mapped_column(String(200), primary_key=True)
    survey_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    stories: Mapped[int]
    confirmed: Mapped[int]
    excluded: Mapped[int]


class ReportCodeGrouping(Base):
    """As `ReportStoryGrouping`, for the code counts (the code before the survey in the key)."""

    __tablename__ = "report_code_groupings"
    __table_args__ = _WITHOUT_ROWID

    dimensions: Mapped[str] = mapped_column(String(40), primary_key=True)
    grain: Mapped[str] = mapped_column(String(8), primary_key=True)
    period_start: Mapped[date] = mapped_column(primary_key=True)
    valence: Mapped[str] = mapped_column(String(16), primary_key=True)
    touchpoint: Mapped[str] = mapped_column(String(200), primary_key=True)
    channel: Mapped[str] = mapped_column(String(200), primary_key=True)
    segment: Mapped[str] = mapped_column(String(200), primary_key=True)
    code: Mapped[str] = mapped_column(String(100), primary_key=True)
    survey_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    codebook_version_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    n: Mapped[int]


class ReportGeneration(Base):
    """One row (id 1): a number that every write changing a report's inputs outside the delta
    rows raises in its own transaction (the fold and `rebuild` in app.reports.rollups; a
    codebook version's insert, update or delete by trigger, migration 1402). The API's report
    cache (app.reports.cache) keys a finished answer by it and by the pending delta rows, so a
    repeated request is a lookup. Never written on the story submission path: a submission
    appends delta rows, which the key counts; the fold that moves them raises this."""

    __tablename__ = "report_generation"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    generation: Mapped[int] = mapped_column(BigInteger, default=0)
