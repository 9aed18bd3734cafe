"""Reading the daily and monthly rollups (period truncation in SQL, per dialect), folding and
rebuilding.

Triggers (migration 0006) append signed delta rows with every change; `fold` moves them into
the rollup tables (the worker calls it every round); every read takes rollup plus pending
deltas in one statement (`story_source` / `code_source`), so a report is exact as soon as a
change commits, however long ago the last fold ran. `rebuild` recomputes the rollups from the
base tables with one INSERT ... SELECT per table (a repair tool, and the fast path for a bulk
load with triggers disabled).

A report of whole months (month, quarter or the whole range, from/to on month boundaries, which
TrendsQuery's snapping guarantees) reads the monthly tables (`report_*_months`,
`report_*_months_by`, and `report_*_months_detail` for two or more dimensions; the deltas
truncated to their month); a month report by a pair of dimensions, and a quarter or whole-range
report by a pair or all three, read `report_*_groupings` (`grouping_source`: the table and its
pending deltas in two queries whose sums `_fetch` adds, so that the table's GROUP BY reads its
key in order); day and week reports, and the alert rules' day ranges, read the
daily ones. Both hold the same sums: the fold moves each
delta into both in one transaction.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any, Literal

from sqlalchemy import (
    Date,
    DateTime,
    Integer,
    Select,
    String,
    cast,
    func,
    literal,
    literal_column,
    select,
    text,
    union_all,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from app.models.coding import IncidentCode
from app.models.incidents import Incident
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
from app.reports import cache as report_cache

Period = Literal["day", "week", "month", "quarter", "all"]
PERIODS: tuple[Period, ...] = ("day", "week", "month", "quarter")
# "all": the whole date range as one period (whole quarters), for the study's tables.
TABLE_PERIODS: tuple[Period, ...] = (*PERIODS, "all")
ALL_START = date(1970, 1, 1)
GroupField = Literal["survey", "touchpoint", "channel", "segment"]
GROUP_FIELDS: tuple[GroupField, ...] = ("survey", "touchpoint", "channel", "segment")
# The rollup column behind each group field.
GROUP_COLUMNS: dict[GroupField, str] = {
    "survey": "survey_id",
    "touchpoint": "touchpoint",
    "channel": "channel",
    "segment": "segment",
}

StoryTable = (
    type[ReportStoryDay]
    | type[ReportStoryDayDetail]
    | type[ReportStoryMonth]
    | type[ReportStoryMonthDetail]
)
CodeTable = (
    type[ReportCodeDay]
    | type[ReportCodeDayDetail]
    | type[ReportCodeMonth]
    | type[ReportCodeMonthDetail]
)
# False: read the daily tables only (the tests and bench.reports_grouped compare both paths).
MONTHLY_READS = True


def period_start(day: date, period: Period) -> date:
    """The first day of the period that contains `day` (weeks start on Monday, ISO 8601)."""
    if period == "all":
        return ALL_START
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    return day.replace(month=(day.month - 1) // 3 * 3 + 1, day=1)


def next_period(start: date, period: Period) -> date:
    if period == "all":
        return date.max
    if period == "day":
        return start + timedelta(days=1)
    if period == "week":
        return start + timedelta(days=7)
    months = 1 if period == "month" else 3
    month = start.month - 1 + months
    return date(start.year + month // 12, month % 12 + 1, 1)


def previous_period(start: date, period: Period) -> date:
    if period == "all":
        return date(1969, 1, 1)  # no such period: no change against it
    if period in ("day", "week"):
        return start - timedelta(days=1 if period == "day" else 7)
    months = 1 if period == "month" else 3
    month = start.month - 1 - months
    return date(start.year + month // 12, month % 12 + 1, 1)


def period_expression(dialect: str, column: Any, period: Period) -> ColumnElement[Any]:
    """SQL for the first day of `column`'s period: date_trunc on PostgreSQL, strftime on SQLite."""
    if period == "all":
        start: ColumnElement[Any] = literal_column(f"'{ALL_START.isoformat()}'")
        # (SQLite's CAST AS DATE gives a number: the text is its date format already.)
        return cast(start, Date) if dialect == "postgresql" else start
    if dialect == "postgresql":
        if period == "day":
            return column  # type: ignore[no-any-return]
        # A literal, not a bound parameter: GROUP BY must see the same expression as SELECT.
        unit: ColumnElement[str] = literal_column(f"'{period}'")
        return cast(func.date_trunc(unit, cast(column, DateTime)), Date)
    if period == "day":
        return column  # type: ignore[no-any-return]
    if period == "month":
        return func.strftime(literal_column("'%Y-%m-01'"), column)
    if period == "week":
        weekday_from_monday = (cast(func.strftime(literal_column("'%w'"), column), Integer) + 6) % 7
        return func.date(column, func.printf(literal_column("'-%d days'"), weekday_from_monday))
    month = cast(func.strftime(literal_column("'%m'"), column), Integer)
    first_month = (month - 1) // 3 * 3 + 1
    return func.printf(
        literal_column("'%s-%02d-01'"), func.strftime(literal_column("'%Y'"), column), first_month
    )


def as_date(value: Any) -> date:
    """A period start from either dialect (PostgreSQL: date; SQLite: 'YYYY-MM-DD')."""
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def tables(group_by: tuple[GroupField, ...]) -> tuple[StoryTable, CodeTable]:
    """The narrow rollups answer ungrouped and per-survey reports; the rest need the detail."""
    if set(group_by) <= {"survey"}:
        return ReportStoryDay, ReportCodeDay
    return ReportStoryDayDetail, ReportCodeDayDetail


_STORY_COUNTS = ("stories", "confirmed", "excluded")


def monthly(period: Period, first_day: date | None, last_day: date | None) -> bool:
    """Whether the monthly rollups answer this read: periods of whole months, and from/to (if
    any) on month boundaries."""
    if not MONTHLY_READS or period not in ("month", "quarter", "all"):
        return False
    if first_day is not None and first_day.day != 1:
        return False
    return last_day is None or last_day == date.max or (last_day + timedelta(days=1)).day == 1


def _key_names(table: StoryTable | CodeTable) -> list[str]:
    return ["day" if c.name == "month" else c.name for c in table.__mapper__.primary_key]


def _with_deltas(
    table: Any, delta: Any, names: list[str], *, dimension: str | None = None, dialect: str = ""
) -> Any:
    """Rollup rows with the pending delta rows appended, in `names`' columns; a monthly table's
    `month` and the deltas' day truncated to their month are both named `day`, and a
    by-dimension table's `value` is named after its dimension (as the _detail column)."""
    months = hasattr(table, "month")
    assert dialect or not months, "a monthly source truncates the deltas per dialect"

    def rollup_column(name: str) -> Any:
        if name == "day" and months:
            return table.month.label("day")
        if dimension is not None and name == dimension:
            return table.value.label(dimension)
        return getattr(table, name)

    def delta_column(name: str) -> Any:
        if name == "day" and months:
            return period_expression(dialect, delta.day, "month").label("day")
        return getattr(delta, name)

    rollup = select(*(rollup_column(n) for n in names))
    if dimension is not None:
        rollup = rollup.where(table.dimension == dimension)
    return union_all(rollup, select(*(delta_column(n) for n in names))).subquery(
        table.__tablename__
    )


def story_source(table: StoryTable, dialect: str = "") -> Any:
    """A story rollup table with the pending deltas appended (same columns), to aggregate over:
    the sum over both is exact whether or not the deltas have been folded yet. (`dialect`: for
    a monthly table, whose deltas are truncated to their month in SQL.)"""
    names = [*_key_names(table), *_STORY_COUNTS]
    return _with_deltas(table, ReportStoryDelta, names, dialect=dialect)


def code_source(table: CodeTable, dialect: str = "") -> Any:
    """A code rollup table with the pending deltas appended (see `story_source`)."""
    names = [*_key_names(table), "n"]
    return _with_deltas(table, ReportCodeDelta, names, dialect=dialect)


def _filters(
    table: Any, survey_id: int | None, first_day: date | None, last_day: date | None
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if survey_id is not None:
        conditions.append(table.survey_id == survey_id)
    if first_day is not None:
        conditions.append(table.day >= first_day)
    if last_day is not None:
        conditions.append(table.day <= last_day)
    return conditions


# The dimensions with a rollup of their own (report_*_days_by).
DIMENSIONS = ("touchpoint", "channel", "segment")


def single_dimension(group_by: tuple[GroupField, ...]) -> str | None:
    """The one dimension a grouping needs besides the survey, if it is only one."""
    dims = [g for g in group_by if g != "survey"]
    return dims[0] if len(dims) == 1 else None


def _story_source_by(dimension: str, dialect: str = "", months: bool = False) -> Any:
    """report_story_days_by (or _months_by) for one dimension, with the pending deltas appended
    (the value column named after the dimension, so a group column reads it like the _detail
    table's)."""
    names = ["survey_id", "day", "valence", dimension, *_STORY_COUNTS]
    table = ReportStoryMonthBy if months else ReportStoryDayBy
    return _with_deltas(table, ReportStoryDelta, names, dimension=dimension, dialect=dialect)


def _code_source_by(dimension: str, dialect: str = "", months: bool = False) -> Any:
    names = ["survey_id", "day", "valence", dimension, "codebook_version_id", "code", "n"]
    table = ReportCodeMonthBy if months else ReportCodeDayBy
    return _with_deltas(table, ReportCodeDelta, names, dimension=dimension, dialect=dialect)


def story_rows(group_by: tuple[GroupField, ...], dialect: str = "", months: bool = False) -> Any:
    """The story rollup rows (with pending deltas) that answer this grouping; `months`: from
    the monthly tables."""
    dimension = single_dimension(group_by)
    if dimension is not None:
        return _story_source_by(dimension, dialect, months)
    table = tables(group_by)[0]
    if months:
        monthly = ReportStoryMonth if table is ReportStoryDay else ReportStoryMonthDetail
        return story_source(monthly, dialect)
    return story_source(table)


def code_rows(group_by: tuple[GroupField, ...], dialect: str = "", months: bool = False) -> Any:
    """The code rollup rows (with pending deltas) that answer this grouping (see `story_rows`)."""
    dimension = single_dimension(group_by)
    if dimension is not None:
        return _code_source_by(dimension, dialect, months)
    table = tables(group_by)[1]
    if months:
        monthly = ReportCodeMonth if table is ReportCodeDay else ReportCodeMonthDetail
        return code_source(monthly, dialect)
    return code_source(table)


def _period_column(dialect: str, day: Any, period: Period, months: bool) -> Any:
    """The period of a rollup row read by story_rows / code_rows, labelled `period`. A monthly
    table's `day` is its month's first day already (every writer truncates it, and the deltas
    are truncated in the source), so a month report groups by it as it is: at a million stories
    a report by two dimensions groups ~107,000 monthly rows, and truncating each again cost
    about a third of the GROUP BY."""
    if months and period == "month":
        return day.label("period")
    return period_expression(dialect, day, period).label("period")


# The groupings of two or three dimensions with rollups of their own (report_*_groupings), and
# the grains each is kept at (the three per month is report_*_months_detail itself).
PAIRS = ("touchpoint,channel", "touchpoint,segment", "channel,segment")
TRIPLE = "touchpoint,channel,segment"
GROUPING_GRAINS: tuple[tuple[str, str], ...] = (
    *((pair, "month") for pair in PAIRS),
    *((pair, "quarter") for pair in PAIRS),
    (TRIPLE, "quarter"),
)


def _quarter_bound(first_day: date | None, last_day: date | None) -> bool:
    def starts_quarter(day: date) -> bool:
        return day.day == 1 and day.month in (1, 4, 7, 10)

    if first_day is not None and not starts_quarter(first_day):
        return False
    return last_day is None or last_day == date.max or starts_quarter(last_day + timedelta(days=1))


def grouping_source(
    period: Period,
    group_by: tuple[GroupField, ...],
    first_day: date | None = None,
    last_day: date | None = None,
) -> tuple[str, str] | None:
    """(grouping, grain) of the report_*_groupings rows that answer a read grouped by two or
    three dimensions (and the survey, which they keep), or None: month reports by a pair read
    the month grain, quarter and whole-range reports by a pair or all three the quarter grain
    (from/to on its bounds, as TrendsQuery snaps them)."""
    if not monthly(period, first_day, last_day):
        return None
    grouping = ",".join(d for d in DIMENSIONS if d in group_by)
    grain = "month" if period == "month" else "quarter"
    if grain == "quarter" and not _quarter_bound(first_day, last_day):
        return None
    return (grouping, grain) if (grouping, grain) in GROUPING_GRAINS else None


def _grouping_parts(
    table: type[ReportStoryGrouping] | type[ReportCodeGrouping],
    delta: Any,
    names: list[str],
    grouping: str,
    grain: str,
    dialect: str,
) -> list[Any]:
    """The grouping rollup's rows and the pending delta rows (truncated to the grain, the
    dimensions outside the grouping as ''), as two sources with the same columns (`day`: the
    period start): each is aggregated on its own and the sums added after, so that the
    rollup's GROUP BY reads its key in order (a UNION ALL in one GROUP BY made SQLite sort
    the rows in a temporary B-tree)."""

    def rollup_column(name: str) -> Any:
        return table.period_start.label("day") if name == "day" else getattr(table, name)

    def delta_column(name: str) -> Any:
        if name == "day":
            return period_expression(dialect, delta.day, grain).label("day")  # type: ignore[arg-type]
        if name in DIMENSIONS and name not in grouping.split(","):
            return literal_column("''").label(name)
        return getattr(delta, name)

    rollup = (
        select(*(rollup_column(n) for n in names))
        .where(table.dimensions == grouping, table.grain == grain)
        .subquery(table.__tablename__)
    )
    pending = select(*(delta_column(n) for n in names)).subquery(delta.__tablename__)
    return [rollup, pending]


def story_cells_queries(
    dialect: str,
    *,
    period: Period,
    group_by: tuple[GroupField, ...],
    survey_id: int | None = None,
    first_day: date | None = None,
    last_day: date | None = None,
) -> list[Select[Any]]:
    """`story_cells_query` as one or more statements whose rows add up (the same key in two
    rows: sum the counts)."""
    source = grouping_source(period, group_by, first_day, last_day)
    if source is None:
        return [
            story_cells_query(
                dialect,
                period=period,
                group_by=group_by,
                survey_id=survey_id,
                first_day=first_day,
                last_day=last_day,
            )
        ]
    names = ["survey_id", "day", "valence", *DIMENSIONS, *_STORY_COUNTS]
    queries = []
    for part in _grouping_parts(ReportStoryGrouping, ReportStoryDelta, names, *source, dialect):
        rows = part.c
        period_col = _grain_period_column(dialect, rows.day, period, source[1])
        groups = [getattr(rows, GROUP_COLUMNS[g]).label(g) for g in group_by]
        # Grouped in the key's order (the dimensions outside the grouping are '' throughout).
        order = [period_col, rows.valence, *(getattr(rows, d) for d in DIMENSIONS)]
        if "survey" in group_by:
            order.append(rows.survey_id)
        queries.append(
            select(
                period_col,
                rows.valence.label("valence"),
                *groups,
                func.sum(rows.stories).label("stories"),
                func.sum(rows.confirmed).label("confirmed"),
                func.sum(rows.excluded).label("excluded"),
            )
            .where(*_filters(rows, survey_id, first_day, last_day))
            .group_by(*order)
        )
    return [_one_snapshot(queries)]


def _one_snapshot(parts: list[Select[Any]]) -> Any:
    """The rollup's part and the pending deltas' part as one statement (UNION ALL of the two
    GROUP BYs, each still reading its own table in key order): two statements would read two
    snapshots on PostgreSQL (READ COMMITTED), and a fold committing between them would move
    deltas out of the second's sight after the first had read the rollup without them."""
    return union_all(*parts)


def code_cells_queries(
    dialect: str,
    *,
    period: Period,
    group_by: tuple[GroupField, ...],
    survey_id: int | None = None,
    first_day: date | None = None,
    last_day: date | None = None,
) -> list[Select[Any]]:
    """`code_cells_query` as one or more queries whose rows add up (see story_cells_queries)."""
    source = grouping_source(period, group_by, first_day, last_day)
    if source is None:
        return [
            code_cells_query(
                dialect,
                period=period,
                group_by=group_by,
                survey_id=survey_id,
                first_day=first_day,
                last_day=last_day,
            )
        ]
    names = ["survey_id", "day", "valence", *DIMENSIONS, "codebook_version_id", "code", "n"]
    queries = []
    for part in _grouping_parts(ReportCodeGrouping, ReportCodeDelta, names, *source, dialect):
        rows = part.c
        period_col = _grain_period_column(dialect, rows.day, period, source[1])
        groups = [getattr(rows, GROUP_COLUMNS[g]).label(g) for g in group_by]
        order = [period_col, rows.valence, *(getattr(rows, d) for d in DIMENSIONS), rows.code]
        if "survey" in group_by:
            order.append(rows.survey_id)
        queries.append(
            select(
                period_col,
                rows.code.label("code"),
                rows.valence.label("valence"),
                *groups,
                func.sum(rows.n).label("n"),
            )
            .where(*_filters(rows, survey_id, first_day, last_day))
            .group_by(*order)
        )
    return [_one_snapshot(queries)]


def _grain_period_column(dialect: str, day: Any, period: Period, grain: str) -> Any:
    """The period of a grouping rollup row: its period start as it is when the report's period
    is the grain, else (the whole range) the period's expression."""
    if period == grain:
        return day.label("period")
    return period_expression(dialect, day, period).label("period")


def story_cells_query(
    dialect: str,
    *,
    period: Period,
    group_by: tuple[GroupField, ...],
    survey_id: int | None = None,
    first_day: date | None = None,
    last_day: date | None = None,
) -> Select[Any]:
    """Stories, confirmed and excluded per period, valence and group: one GROUP BY."""
    months = monthly(period, first_day, last_day)
    story_table = story_rows(group_by, dialect, months).c
    period_col = _period_column(dialect, story_table.day, period, months)
    groups = [getattr(story_table, GROUP_COLUMNS[g]).label(g) for g in group_by]
    keys = [period_col, story_table.valence.label("valence"), *groups]
    return (
        select(
            *keys,
            func.sum(story_table.stories).label("stories"),
            func.sum(story_table.confirmed).label("confirmed"),
            func.sum(story_table.excluded).label("excluded"),
        )
        .where(*_filters(story_table, survey_id, first_day, last_day))
        .group_by(*keys)
    )


def code_cells_query(
    dialect: str,
    *,
    period: Period,
    group_by: tuple[GroupField, ...],
    survey_id: int | None = None,
    first_day: date | None = None,
    last_day: date | None = None,
    codebook_version_id: int | None = None,
) -> Select[Any]:
    """Confirmed stories per code, period, valence and group: one GROUP BY."""
    months = monthly(period, first_day, last_day)
    code_table = code_rows(group_by, dialect, months).c
    period_col = _period_column(dialect, code_table.day, period, months)
    groups = [getattr(code_table, GROUP_COLUMNS[g]).label(g) for g in group_by]
    keys = [period_col, code_table.code.label("code"), code_table.valence.label("valence"), *groups]
    conditions = _filters(code_table, survey_id, first_day, last_day)
    if codebook_version_id is not None:
        conditions.append(code_table.codebook_version_id == codebook_version_id)
    return select(*keys, func.sum(code_table.n).label("n")).where(*conditions).group_by(*keys)


def recorded_codes_query(
    dialect: str, version_ids: list[int], survey_id: int | None = None
) -> Select[Any]:
    """The distinct (codebook version id, code) pairs the rollups hold for these versions."""
    table = code_source(ReportCodeMonth, dialect).c
    conditions = [table.codebook_version_id.in_(version_ids)]
    if survey_id is not None:
        conditions.append(table.survey_id == survey_id)
    return (
        select(table.codebook_version_id, table.code)
        .where(*conditions)
        .group_by(table.codebook_version_id, table.code)
    )


def _mapping_rows(pairs: list[tuple[int, str, str]]) -> Any:
    """(version id, code, target) as a derived table (UNION ALL of literal rows: portable)."""
    rows = [
        select(
            literal(version, Integer).label("version_id"),
            literal(code, String).label("code"),
            literal(target, String).label("target"),
        )
        for version, code, target in pairs
    ]
    return union_all(*rows).subquery("code_map") if len(rows) > 1 else rows[0].subquery("code_map")


def mapped_code_cells_query(
    dialect: str,
    *,
    pairs: list[tuple[int, str, str]],
    distinct_stories: bool,
    period: Period,
    group_by: tuple[GroupField, ...],
    survey_id: int | None = None,
    first_day: date | None = None,
    last_day: date | None = None,
) -> Select[Any]:
    """Confirmed stories per target code (codes recorded under any version, mapped through
    `pairs`), period, valence and group.

    When every target is reached from one code key only, a story has at most one row per target
    and the rollups' sums are exact. Otherwise (a split read back, a parent rolling up its
    children) one story may reach a target twice: then the stories are counted DISTINCT from the
    base tables."""
    mapping = _mapping_rows(pairs)
    if not distinct_stories:
        months = monthly(period, first_day, last_day)
        table = code_rows(group_by, dialect, months).c
        period_col = _period_column(dialect, table.day, period, months)
        groups = [getattr(table, GROUP_COLUMNS[g]).label(g) for g in group_by]
        keys = [period_col, mapping.c.target.label("code"), table.valence.label("valence"), *groups]
        return (
            select(*keys, func.sum(table.n).label("n"))
            .join_from(
                table_from(table),
                mapping,
                (mapping.c.version_id == table.codebook_version_id)
                & (mapping.c.code == table.code),
            )
            .where(*_filters(table, survey_id, first_day, last_day))
            .group_by(*keys)
        )
    dims = _dimension_sql(dialect)
    day: ColumnElement[Any] = literal_column(dims[1].replace("i.", "incidents."))
    columns = {
        "survey": Incident.survey_id,
        "touchpoint": literal_column(dims[3].replace("i.", "incidents.")),
        "channel": literal_column(dims[4].replace("i.", "incidents.")),
        "segment": literal_column(dims[5].replace("i.", "incidents.")),
    }
    period_col = period_expression(dialect, day, period).label("period")
    groups = [columns[g].label(g) for g in group_by]
    keys = [period_col, mapping.c.target.label("code"), Incident.valence.label("valence"), *groups]
    conditions: list[ColumnElement[bool]] = [Incident.status == "coded"]
    if survey_id is not None:
        conditions.append(Incident.survey_id == survey_id)
    if first_day is not None:
        conditions.append(day >= first_day)
    if last_day is not None:
        conditions.append(day <= last_day)
    return (
        select(*keys, func.count(func.distinct(Incident.id)).label("n"))
        .select_from(IncidentCode)
        .join(Incident, Incident.id == IncidentCode.incident_id)
        .join(
            mapping,
            (mapping.c.version_id == IncidentCode.codebook_version_id)
            & (mapping.c.code == IncidentCode.code),
        )
        .where(*conditions)
        .group_by(*keys)
    )


def pair_cells_query(
    dialect: str,
    *,
    pairs: list[tuple[int, str, str]] | None,
    period: Period,
    group_by: tuple[GroupField, ...],
    survey_id: int | None = None,
    first_day: date | None = None,
    last_day: date | None = None,
) -> Select[Any]:
    """Confirmed stories carrying both codes of a pair (code_a < code_b), per period, valence
    and group, DISTINCT stories from the base tables. With `pairs` (a version's mapping) the
    codes are mapped first, as in `mapped_code_cells_query`."""
    first, second = IncidentCode.__table__.alias("first"), IncidentCode.__table__.alias("second")
    dims = _dimension_sql(dialect)
    day: ColumnElement[Any] = literal_column(dims[1].replace("i.", "incidents."))
    columns = {
        "survey": Incident.survey_id,
        "touchpoint": literal_column(dims[3].replace("i.", "incidents.")),
        "channel": literal_column(dims[4].replace("i.", "incidents.")),
        "segment": literal_column(dims[5].replace("i.", "incidents.")),
    }
    statement = (
        select()
        .select_from(first)
        .join(Incident, Incident.id == first.c.incident_id)
        .join(second, second.c.incident_id == first.c.incident_id)
    )
    if pairs is None:
        code_a, code_b = first.c.code, second.c.code
    else:
        map_a, map_b = _mapping_rows(pairs), _mapping_rows(pairs).alias("code_map_b")
        statement = statement.join(
            map_a,
            (map_a.c.version_id == first.c.codebook_version_id) & (map_a.c.code == first.c.code),
        ).join(
            map_b,
            (map_b.c.version_id == second.c.codebook_version_id) & (map_b.c.code == second.c.code),
        )
        code_a, code_b = map_a.c.target, map_b.c.target
    period_col = period_expression(dialect, day, period).label("period")
    groups: list[Any] = [columns[g].label(g) for g in group_by]
    keys = [
        period_col,
        code_a.label("code_a"),
        code_b.label("code_b"),
        Incident.valence.label("valence"),
        *groups,
    ]
    conditions: list[ColumnElement[bool]] = [Incident.status == "coded", code_a < code_b]
    if survey_id is not None:
        conditions.append(Incident.survey_id == survey_id)
    if first_day is not None:
        conditions.append(day >= first_day)
    if last_day is not None:
        conditions.append(day <= last_day)
    return (
        statement.add_columns(*keys, func.count(func.distinct(Incident.id)).label("n"))
        .where(*conditions)
        .group_by(*keys)
    )


def table_from(columns: Any) -> Any:
    """The FROM element behind a subquery's `.c` collection."""
    return next(iter(columns)).table


# --- Rebuilding from the base tables -------------------------------------------------------

_DETAIL = ("survey_id", "day", "valence", "touchpoint", "channel", "segment")
_NARROW = ("survey_id", "day", "valence")
_BY = ("dimension", "survey_id", "day", "valence", "value")
_NARROW_MONTHS = ("survey_id", "month", "valence")
_BY_MONTHS = ("dimension", "survey_id", "month", "valence", "value")
_DETAIL_MONTHS = ("survey_id", "month", "valence", "touchpoint", "channel", "segment")
_GROUPINGS = ("dimensions", "grain", "period_start", "valence", "touchpoint", "channel", "segment")


def _month_sql(dialect: str) -> str:
    """The first day of the month of a rollup or delta row's `day` (as period_expression)."""
    if dialect == "postgresql":
        return "CAST(date_trunc('month', CAST(day AS timestamp)) AS date)"
    return "strftime('%Y-%m-01', day)"


def _grain_sql(dialect: str, column: str, grain: str) -> str:
    """The first day of the month or quarter of a date column (as period_expression)."""
    if dialect == "postgresql":
        if grain == "month":
            return f"CAST(date_trunc('month', CAST({column} AS timestamp)) AS date)"
        return f"CAST(date_trunc('quarter', CAST({column} AS timestamp)) AS date)"
    if grain == "month":
        return f"strftime('%Y-%m-01', {column})"
    return (
        f"printf('%s-%02d-01', strftime('%Y', {column}), "
        f"(CAST(strftime('%m', {column}) AS INTEGER) - 1) / 3 * 3 + 1)"
    )


def _grouping_select(dialect: str, date_column: str, grouping: str, grain: str) -> str:
    """The columns of report_*_groupings (without the counts) from a detail-grain source."""
    values = [d if d in grouping.split(",") else f"'' AS {d}" for d in DIMENSIONS]
    start = _grain_sql(dialect, date_column, grain)
    return ", ".join(
        [f"'{grouping}' AS dimensions", f"'{grain}' AS grain", f"{start} AS period_start",
         "valence", *values]
    )  # fmt: skip


def _dimension_sql(dialect: str) -> list[str]:
    """The rollup dimensions of story `i`, exactly as the triggers compute them."""
    if dialect == "postgresql":
        day = "CAST((i.submitted_at AT TIME ZONE 'UTC') AS date)"
        segment = "COALESCE(left(i.attributes ->> 'segment', 200), '')"
    else:
        day = "date(i.submitted_at)"
        segment = (
            "COALESCE(substr(CAST(json_extract(i.attributes, '$.segment') AS TEXT), 1, 200), '')"
        )
    return [
        "i.survey_id",
        day,
        "i.valence",
        "COALESCE(substr(i.touchpoint, 1, 200), '')",
        "COALESCE(substr(i.channel, 1, 200), '')",
        segment,
    ]


def rebuild(session: Session) -> None:
    """Recompute every rollup from `incidents` and `incident_codes` (GROUP BY, in SQL)."""
    dialect = session.get_bind().dialect.name
    dims = ", ".join(_dimension_sql(dialect))
    detail, narrow = ", ".join(_DETAIL), ", ".join(_NARROW)
    positions = ", ".join(str(p) for p in range(1, len(_DETAIL) + 1))
    coded = "CASE WHEN i.status = 'coded' THEN 1 ELSE 0 END"
    excluded = "CASE WHEN i.status = 'excluded' THEN 1 ELSE 0 END"
    statements = [
        "DELETE FROM report_code_deltas",
        "DELETE FROM report_story_deltas",
        "DELETE FROM report_code_days",
        "DELETE FROM report_code_days_detail",
        "DELETE FROM report_story_days",
        "DELETE FROM report_story_days_detail",
        "DELETE FROM report_story_days_by",
        "DELETE FROM report_code_days_by",
        "DELETE FROM report_story_months",
        "DELETE FROM report_code_months",
        "DELETE FROM report_story_months_by",
        "DELETE FROM report_code_months_by",
        "DELETE FROM report_story_months_detail",
        "DELETE FROM report_code_months_detail",
        "DELETE FROM report_story_groupings",
        "DELETE FROM report_code_groupings",
        f"INSERT INTO report_story_days_detail ({detail}, stories, confirmed, excluded) "
        f"SELECT {dims}, COUNT(*), SUM({coded}), SUM({excluded}) "
        f"FROM incidents i GROUP BY {positions}",
        f"INSERT INTO report_code_days_detail ({detail}, codebook_version_id, code, n) "
        f"SELECT {dims}, c.codebook_version_id, c.code, COUNT(*) FROM incident_codes c "
        f"JOIN incidents i ON i.id = c.incident_id WHERE i.status = 'coded' "
        f"GROUP BY {positions}, {len(_DETAIL) + 1}, {len(_DETAIL) + 2}",
        f"INSERT INTO report_story_days ({narrow}, stories, confirmed, excluded) "
        f"SELECT {narrow}, SUM(stories), SUM(confirmed), SUM(excluded) "
        f"FROM report_story_days_detail GROUP BY {narrow}",
        f"INSERT INTO report_code_days ({narrow}, codebook_version_id, code, n) "
        f"SELECT {narrow}, codebook_version_id, code, SUM(n) "
        f"FROM report_code_days_detail GROUP BY {narrow}, codebook_version_id, code",
    ]
    for dimension in DIMENSIONS:
        statements += [
            "INSERT INTO report_story_days_by "
            "(dimension, survey_id, day, valence, value, stories, confirmed, excluded) "
            f"SELECT '{dimension}', survey_id, day, valence, {dimension}, SUM(stories), "
            "SUM(confirmed), SUM(excluded) FROM report_story_days_detail "
            f"GROUP BY survey_id, day, valence, {dimension}",
            "INSERT INTO report_code_days_by "
            "(dimension, survey_id, day, valence, value, codebook_version_id, code, n) "
            f"SELECT '{dimension}', survey_id, day, valence, {dimension}, codebook_version_id, "
            "code, SUM(n) FROM report_code_days_detail "
            f"GROUP BY survey_id, day, valence, {dimension}, codebook_version_id, code",
        ]
    # The monthly tables from the daily ones (a few hundred thousand rows, not the stories).
    month, sums = _month_sql(dialect), "SUM(stories), SUM(confirmed), SUM(excluded)"
    statements += [
        "INSERT INTO report_story_months (survey_id, month, valence, stories, confirmed, "
        f"excluded) SELECT survey_id, {month}, valence, {sums} FROM report_story_days "
        "GROUP BY 1, 2, 3",
        "INSERT INTO report_code_months (survey_id, month, valence, codebook_version_id, code, "
        f"n) SELECT survey_id, {month}, valence, codebook_version_id, code, SUM(n) "
        "FROM report_code_days GROUP BY 1, 2, 3, 4, 5",
        "INSERT INTO report_story_months_by (dimension, survey_id, month, valence, value, "
        f"stories, confirmed, excluded) SELECT dimension, survey_id, {month}, valence, value, "
        f"{sums} FROM report_story_days_by GROUP BY 1, 2, 3, 4, 5",
        "INSERT INTO report_code_months_by (dimension, survey_id, month, valence, value, "
        f"codebook_version_id, code, n) SELECT dimension, survey_id, {month}, valence, value, "
        "codebook_version_id, code, SUM(n) FROM report_code_days_by "
        "GROUP BY 1, 2, 3, 4, 5, 6, 7",
        "INSERT INTO report_story_months_detail (survey_id, month, valence, touchpoint, "
        f"channel, segment, stories, confirmed, excluded) SELECT survey_id, {month}, valence, "
        f"touchpoint, channel, segment, {sums} FROM report_story_days_detail "
        "GROUP BY 1, 2, 3, 4, 5, 6",
        "INSERT INTO report_code_months_detail (survey_id, month, valence, touchpoint, "
        "channel, segment, codebook_version_id, code, n) SELECT survey_id, "
        f"{month}, valence, touchpoint, channel, segment, codebook_version_id, code, SUM(n) "
        "FROM report_code_days_detail GROUP BY 1, 2, 3, 4, 5, 6, 7, 8",
    ]
    # The groupings from the monthly detail.
    for grouping, grain in GROUPING_GRAINS:
        columns = _grouping_select(dialect, "month", grouping, grain)
        statements += [
            f"INSERT INTO report_story_groupings ({', '.join(_GROUPINGS)}, survey_id, stories, "
            f"confirmed, excluded) SELECT {columns}, survey_id, {sums} "
            "FROM report_story_months_detail "
            "GROUP BY 1, 2, 3, 4, 5, 6, 7, 8",
            f"INSERT INTO report_code_groupings ({', '.join(_GROUPINGS)}, code, survey_id, "
            f"codebook_version_id, n) SELECT {columns}, code, survey_id, codebook_version_id, "
            "SUM(n) FROM report_code_months_detail GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10",
        ]
    for statement in statements:
        session.execute(text(statement))
    # The pending deltas are gone: the report cache's key must not come back to an old value.
    report_cache.bump(session)
    session.flush()


# --- Folding the deltas ----------------------------------------------------------------------

# The rollup tables each delta table feeds, with their key columns and counts.
_FOLDS = (
    (
        "report_story_deltas",
        (
            ("report_story_days", _NARROW),
            ("report_story_days_detail", _DETAIL),
            ("report_story_days_by", _BY),
            ("report_story_months", _NARROW_MONTHS),
            ("report_story_months_by", _BY_MONTHS),
            ("report_story_months_detail", _DETAIL_MONTHS),
            ("report_story_groupings", (*_GROUPINGS, "survey_id")),
        ),
        _STORY_COUNTS,
    ),
    (
        "report_code_deltas",
        (
            ("report_code_days", (*_NARROW, "codebook_version_id", "code")),
            ("report_code_days_detail", (*_DETAIL, "codebook_version_id", "code")),
            ("report_code_days_by", (*_BY, "codebook_version_id", "code")),
            ("report_code_months", (*_NARROW_MONTHS, "codebook_version_id", "code")),
            ("report_code_months_by", (*_BY_MONTHS, "codebook_version_id", "code")),
            ("report_code_months_detail", (*_DETAIL_MONTHS, "codebook_version_id", "code")),
            ("report_code_groupings", (*_GROUPINGS, "code", "survey_id", "codebook_version_id")),
        ),
        ("n",),
    ),
)
# From this many delta rows on, the fold deletes the grouping tables' zero rows by a scan.
SCAN_ZEROS_FROM = 10_000
# Any fixed number: PostgreSQL's advisory lock that lets one fold run at a time.
_FOLD_LOCK = 7_301_911


def _taken_rows(
    source: str, taken: str, keys: tuple[str, ...], counts: tuple[str, ...], dialect: str
) -> str:
    """The taken delta rows in a rollup table's key columns: `month` truncated from the day,
    and one row per dimension of each delta row for a by-dimension table."""

    def columns(dimension: str | None) -> str:
        named = {"month": f"{_month_sql(dialect)} AS month"}
        if dimension is not None:
            named |= {"dimension": f"'{dimension}' AS dimension", "value": f"{dimension} AS value"}
        return ", ".join([*(named.get(k, k) for k in keys), *counts])

    if "dimensions" in keys:  # one row per grouping and grain of each delta row
        rest = ", ".join([*keys[len(_GROUPINGS) :], *counts])
        selects = [
            f"SELECT {_grouping_select(dialect, 'day', grouping, grain)}, {rest} "
            f"FROM {source} WHERE {taken}"
            for grouping, grain in GROUPING_GRAINS
        ]
        return f"({' UNION ALL '.join(selects)}) AS taken"
    dimensions: tuple[str | None, ...] = DIMENSIONS if "dimension" in keys else (None,)
    selects = [f"SELECT {columns(d)} FROM {source} WHERE {taken}" for d in dimensions]
    return f"({' UNION ALL '.join(selects)}) AS taken"


def fold(session: Session) -> int:
    """Move the pending delta rows into the rollup tables; returns how many were folded.

    In the caller's transaction. On PostgreSQL the deltas are taken with DELETE ... RETURNING
    (exactly the rows this transaction sees: one committing meanwhile waits for the next fold)
    under an advisory lock (several workers fold one at a time; the others skip). On SQLite the
    transaction holds the write lock, so every delta up to the highest id is there to take.
    Cells that fall to zero are deleted, as if they had never been."""
    dialect = session.get_bind().dialect.name
    postgres = dialect == "postgresql"
    if postgres and not session.scalar(
        text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": _FOLD_LOCK}
    ):
        return 0
    folded = 0
    for deltas, targets, counts in _FOLDS:
        if postgres:
            batch = f"pg_temp.fold_{deltas}"
            session.execute(
                text(
                    f"CREATE TEMP TABLE IF NOT EXISTS fold_{deltas} (LIKE {deltas}) "
                    "ON COMMIT DELETE ROWS"
                )
            )
            moved = session.execute(  # type: ignore[attr-defined]
                text(
                    f"WITH moved AS (DELETE FROM {deltas} RETURNING *) "
                    f"INSERT INTO {batch} SELECT * FROM moved"
                )
            ).rowcount
            source, taken = batch, "TRUE"
        else:
            last = session.scalar(text(f"SELECT max(id) FROM {deltas}"))
            source, taken = deltas, f"id <= {int(last or 0)}"
            moved = int(session.scalar(text(f"SELECT count(*) FROM {source} WHERE {taken}")) or 0)
        if not moved:
            continue
        folded += moved
        for table, keys in targets:
            key = ", ".join(keys)
            sums = ", ".join(f"SUM({c})" for c in counts)
            update = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in counts)
            rows = _taken_rows(source, taken, keys, counts, dialect)
            session.execute(
                text(
                    f"INSERT INTO {table} ({key}, {', '.join(counts)}) "
                    f"SELECT {key}, {sums} FROM {rows} GROUP BY {key} "
                    f"ON CONFLICT ({key}) DO UPDATE SET {update}"
                )
            )
            if ("dimensions" in keys or postgres) and moved >= SCAN_ZEROS_FROM:
                # Seven rows per delta: for many deltas, matching them again costs more than a
                # scan of the table, which holds no zero row but those this fold made (every
                # fold deletes them). A worker's round folds few: it matches them. PostgreSQL
                # matched each zero row against the whole temporary table of taken rows (no
                # index, no statistics) for every table: 62 s of a 72 s fold of 46,000 deltas
                # of a 30,000-story study, against a scan of each table.
                session.execute(text(f"DELETE FROM {table} WHERE {counts[0]} = 0"))
                continue
            session.execute(
                text(
                    f"DELETE FROM {table} WHERE {counts[0]} = 0 AND ({key}) IN "
                    f"(SELECT {key} FROM {rows})"
                )
            )
        if not postgres:
            session.execute(text(f"DELETE FROM {deltas} WHERE {taken}"))
    if folded:
        # Same figures, fewer pending deltas: the report cache's key (generation, delta count)
        # moves on, in this transaction; a round with nothing to fold writes nothing.
        report_cache.bump(session)
    return folded
