"""Reading the daily rollups (period truncation in SQL, per dialect), folding and rebuilding.

Triggers (migration 0006) append signed delta rows with every change; `fold` moves them into
the rollup tables (the worker calls it every round); every read takes rollup plus pending
deltas in one statement (`story_source` / `code_source`), so a report is exact as soon as a
change commits, however long ago the last fold ran. `rebuild` recomputes the rollups from the
base tables with one INSERT ... SELECT per table (a repair tool, and the fast path for a bulk
load with triggers disabled).
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
    ReportStoryDay,
    ReportStoryDayBy,
    ReportStoryDayDetail,
    ReportStoryDelta,
)

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

StoryTable = type[ReportStoryDay] | type[ReportStoryDayDetail]
CodeTable = type[ReportCodeDay] | type[ReportCodeDayDetail]


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


def _key_names(table: StoryTable | CodeTable) -> list[str]:
    return [column.name for column in table.__mapper__.primary_key]


def story_source(table: StoryTable) -> Any:
    """A story rollup table with the pending deltas appended (same columns), to aggregate over:
    the sum over both is exact whether or not the deltas have been folded yet."""
    names = [*_key_names(table), *_STORY_COUNTS]
    return union_all(
        select(*(getattr(table, n) for n in names)),
        select(*(getattr(ReportStoryDelta, n) for n in names)),
    ).subquery(table.__tablename__)


def code_source(table: CodeTable) -> Any:
    """A code rollup table with the pending deltas appended (see `story_source`)."""
    names = [*_key_names(table), "n"]
    return union_all(
        select(*(getattr(table, n) for n in names)),
        select(*(getattr(ReportCodeDelta, n) for n in names)),
    ).subquery(table.__tablename__)


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


def _story_source_by(dimension: str) -> Any:
    """report_story_days_by for one dimension, with the pending deltas appended (the value
    column named after the dimension, so a group column reads it like the _detail table's)."""
    by, delta = ReportStoryDayBy, ReportStoryDelta
    return union_all(
        select(
            by.survey_id,
            by.day,
            by.valence,
            by.value.label(dimension),
            *(getattr(by, c) for c in _STORY_COUNTS),
        ).where(by.dimension == dimension),
        select(
            delta.survey_id,
            delta.day,
            delta.valence,
            getattr(delta, dimension).label(dimension),
            *(getattr(delta, c) for c in _STORY_COUNTS),
        ),
    ).subquery("report_story_days_by")


def _code_source_by(dimension: str) -> Any:
    by, delta = ReportCodeDayBy, ReportCodeDelta
    return union_all(
        select(
            by.survey_id,
            by.day,
            by.valence,
            by.value.label(dimension),
            by.codebook_version_id,
            by.code,
            by.n,
        ).where(by.dimension == dimension),
        select(
            delta.survey_id,
            delta.day,
            delta.valence,
            getattr(delta, dimension).label(dimension),
            delta.codebook_version_id,
            delta.code,
            delta.n,
        ),
    ).subquery("report_code_days_by")


def story_rows(group_by: tuple[GroupField, ...]) -> Any:
    """The story rollup rows (with pending deltas) that answer this grouping."""
    dimension = single_dimension(group_by)
    if dimension is not None:
        return _story_source_by(dimension)
    return story_source(tables(group_by)[0])


def code_rows(group_by: tuple[GroupField, ...]) -> Any:
    """The code rollup rows (with pending deltas) that answer this grouping."""
    dimension = single_dimension(group_by)
    if dimension is not None:
        return _code_source_by(dimension)
    return code_source(tables(group_by)[1])


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
    story_table = story_rows(group_by).c
    period_col = period_expression(dialect, story_table.day, period).label("period")
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
    code_table = code_rows(group_by).c
    period_col = period_expression(dialect, code_table.day, period).label("period")
    groups = [getattr(code_table, GROUP_COLUMNS[g]).label(g) for g in group_by]
    keys = [period_col, code_table.code.label("code"), code_table.valence.label("valence"), *groups]
    conditions = _filters(code_table, survey_id, first_day, last_day)
    if codebook_version_id is not None:
        conditions.append(code_table.codebook_version_id == codebook_version_id)
    return select(*keys, func.sum(code_table.n).label("n")).where(*conditions).group_by(*keys)


def recorded_codes_query(version_ids: list[int], survey_id: int | None = None) -> Select[Any]:
    """The distinct (codebook version id, code) pairs the rollups hold for these versions."""
    table = code_source(ReportCodeDay).c
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
        table = code_rows(group_by).c
        period_col = period_expression(dialect, table.day, period).label("period")
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
    for statement in statements:
        session.execute(text(statement))
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
        ),
        _STORY_COUNTS,
    ),
    (
        "report_code_deltas",
        (
            ("report_code_days", (*_NARROW, "codebook_version_id", "code")),
            ("report_code_days_detail", (*_DETAIL, "codebook_version_id", "code")),
            ("report_code_days_by", (*_BY, "codebook_version_id", "code")),
        ),
        ("n",),
    ),
)
# Any fixed number: PostgreSQL's advisory lock that lets one fold run at a time.
_FOLD_LOCK = 7_301_911


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
            rows = f"(SELECT * FROM {source} WHERE {taken}) AS taken"
            if "dimension" in keys:  # one row per dimension of each delta row
                rest = [k for k in keys if k not in ("dimension", "survey_id", "day", "valence")]
                rest_sql = "".join(f", {k}" for k in rest if k != "value")
                rows = (
                    "("
                    + " UNION ALL ".join(
                        f"SELECT '{d}' AS dimension, survey_id, day, valence, {d} AS value"
                        f"{rest_sql}, {', '.join(counts)} FROM {source} WHERE {taken}"
                        for d in DIMENSIONS
                    )
                    + ") AS taken"
                )
            session.execute(
                text(
                    f"INSERT INTO {table} ({key}, {', '.join(counts)}) "
                    f"SELECT {key}, {sums} FROM {rows} GROUP BY {key} "
                    f"ON CONFLICT ({key}) DO UPDATE SET {update}"
                )
            )
            session.execute(
                text(
                    f"DELETE FROM {table} WHERE {counts[0]} = 0 AND ({key}) IN "
                    f"(SELECT {key} FROM {rows})"
                )
            )
        if not postgres:
            session.execute(text(f"DELETE FROM {deltas} WHERE {taken}"))
    return folded
