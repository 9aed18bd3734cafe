"""Trends: shares of confirmed stories by final code per period and valence, from the rollups.

Two GROUP BY queries over the rollups (story counts, code counts; the monthly tables for month,
quarter and whole-range reports, the daily ones for days and weeks) give every figure; the rest
is arithmetic on those aggregates: margins for the suppression lines, Wilson intervals and
the change against the previous period.

Definitions (also in the response's `definitions`):
- count: confirmed stories (status coded) of the cell that carry the final code;
- base: confirmed stories of the cell (period x valence x group): the share's denominator;
- share = count / base, with its Wilson 95% interval;
- confirmed_share = confirmed / (stories - excluded): of the stories that can count, the share
  already coded, i.e. how final the period's figures are.
With `codebook_version_id`, every final code of that version's codebook counts, mapped into that
version (app.codebooks.vocabulary: a codebook change moves only the rows it touches, so the rows
of one codebook carry several version ids), and each story counts once per code; parent codes
get a roll-up row (`level: rollup`): the stories carrying the parent or any of its descendants.
The base stays every confirmed story of the cell (stories coded with another codebook count as
not carrying the code).

Suppression (see app.reports.suppression): counts below `min_cell` are hidden, and so is every
figure computed from them. Lines, i.e. the sums a reader could subtract:
- per period and measure (stories, confirmed, excluded): the period total = the sum of the two
  valence totals; per period, valence and measure: the valence total = the sum over the groups;
- per period, code and valence: the all-groups count (what the ungrouped report publishes) = the
  sum over the groups.
Across report shapes (`_protect`): a grouped report's totals (the all-groups figures, which
the ungrouped report publishes) are hidden exactly as the ungrouped report hides them, and
only group cells are hidden for its own lines. A report's cells are also tied to the finer
period's report (a quarter = the sum of its months, the whole range = the sum of its
quarters): the finer report is protected first, its cells are fixed, and a cell here is hidden
when exactly one of the finer cells it sums is hidden (the issue: June hidden by the month
report came back as the quarter minus April and May). Weeks straddle months, and tying months
to days costs seconds at a million stories: viewers get month and quarter reports (the router
refuses day and week to them).
Limits: reports grouped by different fields (touchpoint vs touchpoint and channel) are not tied
to each other, and codes do not sum to anything (a story may carry several), so there is no
line across codes. `tests/reports/test_suppression_shapes.py` attacks the day, month and
quarter reports together with exact linear algebra.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace
from datetime import date
from typing import Any

from sqlalchemy.orm import Session

from app.codebooks.vocabulary import vocabulary
from app.errors import Invalid
from app.models.incidents import VALENCES
from app.reports import rollups
from app.reports.intervals import two_proportion_many, wilson_95_many
from app.reports.rollups import GROUP_FIELDS, PERIODS, TABLE_PERIODS, GroupField, Period
from app.reports.schemas import (
    SHARES_NOTE,
    TrendsReport,
)
from app.reports.suppression import Line, is_small, secondary

MAX_ROWS = 100_000
# Internal name of a parent's roll-up row (code keys are [a-z][a-z0-9_]*, so it cannot clash).
ROLLUP_SUFFIX = "/*"
# Internal name of a Bitner group's row, and of a pair of codes' (co-occurrence).
GROUP_PREFIX = "group/"
PAIR_PREFIX = "pair/"
MEASURES = ("stories", "confirmed", "excluded")
DEFINITIONS = {
    "count": "confirmed stories (status coded) of the cell that carry the final code (a "
    "roll-up row: the code or any of its descendants, each story once)",
    "base": "confirmed stories of the cell (period x valence x group): the share's denominator",
    "share": "count / base; ci_low/ci_high: its Wilson 95% score interval",
    "confirmed_share": "confirmed / (stories - excluded): of the stories that can count, the "
    "share already coded (how final the figures are)",
    "change_from_previous": "share minus the previous period's share, pooled two-proportion "
    "z-test (two-sided p)",
    "suppressed": "a count below min_cell, or one hidden so that it cannot be recovered from "
    "totals and other cells; the share and interval built on it are null too",
}

Group = tuple[Any, ...]


@dataclass(frozen=True)
class TrendsQuery:
    period: Period = "month"
    group_by: tuple[GroupField, ...] = ()
    survey_id: int | None = None
    date_from: date | None = None
    date_to: date | None = None
    codebook_version_id: int | None = None
    # Also count stories per Bitner group of the version's codes (the study's category table).
    bitner_groups: bool = False
    # Also count stories per pair of codes (`pair/<a>&<b>`: carrying both; co-occurrence).
    cooccurrence: bool = False

    def __post_init__(self) -> None:
        if self.period not in TABLE_PERIODS:
            raise Invalid(f"period must be one of {', '.join(PERIODS)}")
        unknown = [g for g in self.group_by if g not in GROUP_FIELDS]
        if unknown:
            raise Invalid(
                f"cannot group by {', '.join(unknown)}; choose from {', '.join(GROUP_FIELDS)}"
            )
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise Invalid("from must not be after to")

    @property
    def snap(self) -> Period:
        """The period from/to are snapped to ("all" covers whole quarters)."""
        return "quarter" if self.period == "all" else self.period

    @property
    def first_day(self) -> date | None:
        return rollups.period_start(self.date_from, self.snap) if self.date_from else None

    @property
    def last_day(self) -> date | None:
        if self.date_to is None:
            return None
        start = rollups.period_start(self.date_to, self.snap)
        return date.fromordinal(rollups.next_period(start, self.snap).toordinal() - 1)


def parse_group_by(values: Sequence[str]) -> tuple[GroupField, ...]:
    """`group_by=touchpoint&group_by=channel` or `group_by=touchpoint,channel`, in order."""
    fields: list[GroupField] = []
    for value in values:
        for part in value.split(","):
            name = part.strip()
            if not name:
                continue
            if name not in GROUP_FIELDS:
                raise Invalid(f"cannot group by {name!r}; choose from {', '.join(GROUP_FIELDS)}")
            if name not in fields:
                fields.append(name)  # type: ignore[arg-type]
    return tuple(fields)


def _group_value(field: GroupField, value: Any) -> Any:
    if field == "survey":
        return int(value)
    return value or None  # '' in the rollups: not given


@dataclass
class _Cells:
    """The aggregates of one report: story counts and code counts by their keys."""

    stories: dict[tuple[date, str, Group], dict[str, int]]
    codes: dict[tuple[date, str, str, Group], int]
    code_names: list[str]  # a parent's roll-up is named `<key>/*`
    rolled_up: dict[str, list[str]]


def _group_reader(group_by: tuple[GroupField, ...], start: int) -> Any:
    """A function giving a result row's group (the columns from `start` on), as _group_value
    reads them, each distinct group one tuple (the reports' dictionaries share it)."""
    width = len(group_by)
    if not width:
        return lambda row: ()
    seen: dict[tuple[Any, ...], Group] = {}

    def read(row: Any) -> Group:
        raw = tuple(row[start : start + width])
        group = seen.get(raw)
        if group is None:
            group = seen[raw] = tuple(
                _group_value(f, v) for f, v in zip(group_by, raw, strict=True)
            )
        return group

    return read


def _driver_rows(execute: Any, statement: Any) -> list[tuple[Any, ...]]:
    """A statement's rows as the driver gives them (tuples: no Row objects, no result
    processing; the report's queries select dates, texts and integers, which `_fetch` reads
    from either driver as they come): a grouped report reads tens of thousands."""
    result = execute(statement)
    try:
        return result.cursor.fetchall()  # type: ignore[no-any-return]
    finally:
        result.close()


def _fetch(session: Session, query: TrendsQuery) -> _Cells:
    dialect = session.get_bind().dialect.name
    common: dict[str, Any] = {
        "period": query.period,
        "group_by": query.group_by,
        "survey_id": query.survey_id,
        "first_day": query.first_day,
        "last_day": query.last_day,
    }
    group_by = query.group_by
    width = len(group_by)
    # Rows read by position (the columns are the queries' own: period, [code,] valence, the
    # groups, then the measures); each distinct period and group converted once.
    execute = session.connection().execute
    periods: dict[Any, date] = {}
    groups: dict[tuple[Any, ...], Group] = {}

    def period_of(value: Any) -> date:
        period = periods.get(value)
        if period is None:
            period = periods[value] = rollups.as_date(value)
        return period

    def group_of(raw: tuple[Any, ...]) -> Group:
        group = groups.get(raw)
        if group is None:
            group = groups[raw] = tuple(
                _group_value(f, v) for f, v in zip(group_by, raw, strict=True)
            )
        return group

    stories: dict[tuple[date, str, Group], dict[str, int]] = {}
    # One query, or a rollup's and its pending deltas' (rows with the same key add up).
    for story_sql in rollups.story_cells_queries(dialect, **common):
        for row in _driver_rows(execute, story_sql):
            if row[1] not in VALENCES:  # imported stories without a clear valence: no base
                continue
            key = (period_of(row[0]), row[1], group_of(tuple(row[2 : 2 + width])))
            counts = stories.get(key)
            if counts is None:
                stories[key] = {
                    "stories": int(row[2 + width]),
                    "confirmed": int(row[3 + width]),
                    "excluded": int(row[4 + width]),
                }
            else:
                counts["stories"] += int(row[2 + width])
                counts["confirmed"] += int(row[3 + width])
                counts["excluded"] += int(row[4 + width])
    codes: dict[tuple[date, str, str, Group], int] = {}
    names: set[str] = set()
    rolled_up: dict[str, list[str]] = {}
    pairs: list[tuple[int, str, str]] = []
    if query.codebook_version_id is None:
        code_sqls = rollups.code_cells_queries(dialect, **common)
    else:
        pairs, rolled_up, distinct = _version_pairs(session, query)
        if not pairs:
            return _Cells(stories, codes, [], rolled_up)
        code_sqls = [
            rollups.mapped_code_cells_query(
                dialect, pairs=pairs, distinct_stories=distinct, **common
            )
        ]
    n_at = 3 + width
    for code_sql in code_sqls:
        for row in _driver_rows(execute, code_sql):
            if row[2] not in VALENCES:
                continue
            code_key = (period_of(row[0]), row[1], row[2], group_of(tuple(row[3:n_at])))
            codes[code_key] = codes.get(code_key, 0) + int(row[n_at])
            names.add(row[1])
    if query.cooccurrence:
        pair_sql = rollups.pair_cells_query(
            dialect,
            pairs=[p for p in pairs if _row_code(p[2])[1] == "code"]
            if query.codebook_version_id is not None
            else None,
            **common,
        )
        pair_group_of = _group_reader(query.group_by, 4)
        for row in execute(pair_sql).all():
            if row.valence not in VALENCES:
                continue
            name = f"{PAIR_PREFIX}{row.code_a}&{row.code_b}"
            codes[(period_of(row.period), name, row.valence, pair_group_of(row))] = int(row.n)
            names.add(name)
    return _Cells(stories, codes, sorted(names, key=_code_order), rolled_up)


def _code_order(name: str) -> tuple[bool, bool, str, bool]:
    return (
        name.startswith(PAIR_PREFIX),
        name.startswith(GROUP_PREFIX),
        name.removesuffix(ROLLUP_SUFFIX),
        name.endswith(ROLLUP_SUFFIX),
    )


def _row_code(name: str) -> tuple[str, str]:
    """(code, level) of an internal code name."""
    if name.startswith(GROUP_PREFIX):
        return name.removeprefix(GROUP_PREFIX), "bitner_group"
    if name.startswith(PAIR_PREFIX):
        return name.removeprefix(PAIR_PREFIX), "pair"
    if name.endswith(ROLLUP_SUFFIX):
        return name.removesuffix(ROLLUP_SUFFIX), "rollup"
    return name, "code"


def _version_pairs(
    session: Session, query: TrendsQuery
) -> tuple[list[tuple[int, str, str]], dict[str, list[str]], bool]:
    """The (recorded version, code, target) pairs of a report under one codebook version: every
    final code of that codebook mapped into the version, and each parent code (`<key>/*`)
    reached from its descendants and itself. Also the roll-ups (parent -> codes it covers) and
    whether stories must be counted DISTINCT (some target is reached from several codes)."""
    assert query.codebook_version_id is not None
    words = vocabulary(session, query.codebook_version_id)
    recorded = [
        (int(version_id), str(code))
        for version_id, code in session.execute(
            rollups.recorded_codes_query(
                session.get_bind().dialect.name, words.version_ids, query.survey_id
            )
        )
    ]
    pairs = words.pairs(recorded)
    rolled_up: dict[str, list[str]] = {}
    for version_id, code, target in list(pairs):
        group = words.group(target) if query.bitner_groups else None
        if group is not None:
            pairs.append((version_id, code, GROUP_PREFIX + group))
        for ancestor in words.ancestors(target):
            pairs.append((version_id, code, ancestor + ROLLUP_SUFFIX))
            covered = rolled_up.setdefault(ancestor, [ancestor])
            if target not in covered:
                covered.append(target)
    sources: dict[str, set[str]] = {}
    for _version_id, code, target in pairs:
        sources.setdefault(target, set()).add(code)
    distinct = any(len(codes) > 1 for codes in sources.values())
    return sorted(set(pairs)), {k: sorted(v) for k, v in rolled_up.items()}, distinct


def _story_key(measure: str, period: date, valence: str | None, group: Group | None) -> Hashable:
    return ("story", measure, period, valence, group)


def _code_key(period: date, code: str, valence: str, group: Group | None) -> Hashable:
    return ("code", period, code, valence, group)


# Where the period date sits in a `_story_key` and in a `_code_key`.
_PERIOD_AT = {"story": 2, "code": 1}


# The finer period each period is a sum of (weeks straddle months: no line between those).
# Day and week reports are for the team only (the router refuses them to viewers): a month tied
# to its days would have to protect every day cell in Python (seconds at a million stories).
FINER: dict[Period, Period] = {"quarter": "month", "all": "quarter"}


def _finer_key(key: Hashable) -> Hashable:
    """A key of the finer report, tagged: its period dates may equal this report's."""
    return ("finer", key)


class _Protected:
    """Every published count of the report, and which of them are hidden.

    `ungrouped` (for a grouped report): the protection of the same report without groups,
    whose totals this report publishes too and must hide exactly alike. `finer`: the protection
    of the same report at the finer period (FINER), whose cells add up to this report's: a
    cell of this report is hidden when it would give a hidden finer cell away."""

    def __init__(
        self,
        cells: _Cells,
        grouped: bool,
        min_cell: int,
        *,
        period: Period = "month",
        ungrouped: _Protected | None = None,
        finer: _Protected | None = None,
    ) -> None:
        self.values: dict[Hashable, int] = {}
        self.hidden: set[Hashable] = set()
        self.grouped = grouped
        self.cells = cells
        self.period = period
        self.ungrouped = ungrouped
        self.finer = finer
        self.periods = sorted({p for p, _v, _g in cells.stories})
        self.groups: dict[tuple[date, str], list[Group]] = {}
        for period_start, valence, group in sorted(cells.stories, key=_sort_key):
            self.groups.setdefault((period_start, valence), []).append(group)
        self._protect_stories(min_cell)
        self._find_coded_cells()
        self._protect_codes(min_cell)

    def cell(self, measure: str, period: date, valence: str, group: Group) -> Hashable:
        # Ungrouped, the one group cell is the valence total itself.
        return _story_key(measure, period, valence, group if self.grouped else None)

    def coded_cells(self, period: date, valence: str) -> list[Group]:
        """Groups whose code rows are published: some confirmed stories, or a hidden base.

        (A base visibly 0 has no code rows; a hidden one must have them, or their absence would
        give the base away.)"""
        return self._coded.get((period, valence), [])

    def _find_coded_cells(self) -> None:
        self._coded: dict[tuple[date, str], list[Group]] = {}
        for (period, valence), groups in self.groups.items():
            self._coded[(period, valence)] = [
                g
                for g in groups
                if self.cells.stories[(period, valence, g)]["confirmed"] > 0
                or self.cell("confirmed", period, valence, g) in self.hidden
            ]

    def _finer_lines(self, keys: list[Hashable], values: dict[Hashable, int]) -> list[Line]:
        """Each key of this report = the sum of the same key over the finer periods it covers;
        the finer report's figures enter `values` under tagged keys, hidden as it hides them."""
        finer = self.finer
        if finer is None:
            return []
        parts: dict[Hashable, list[Hashable]] = {}
        for key, value in finer.values.items():
            if not isinstance(key, tuple) or key[0] not in ("story", "code"):
                continue
            position = _PERIOD_AT[key[0]]
            coarse = list(key)
            coarse[position] = rollups.period_start(key[position], self.period)
            parts.setdefault(tuple(coarse), []).append(_finer_key(key))
            values[_finer_key(key)] = value
        return [Line(key, tuple(parts[key])) for key in keys if key in parts]

    def _finer_hidden(self) -> set[Hashable]:
        return {_finer_key(k) for k in self.finer.hidden} if self.finer is not None else set()

    def _protect_stories(self, min_cell: int) -> None:
        lines: list[Line] = []
        for period in self.periods:
            for measure in MEASURES:
                period_total = _story_key(measure, period, None, None)
                self.values[period_total] = 0
                valence_totals = []
                for valence in VALENCES:
                    valence_total = _story_key(measure, period, valence, None)
                    valence_totals.append(valence_total)
                    self.values[valence_total] = 0
                    parts = []
                    for group in self.groups.get((period, valence), []):
                        value = self.cells.stories[(period, valence, group)][measure]
                        self.values[valence_total] += value
                        if self.grouped:
                            key = self.cell(measure, period, valence, group)
                            self.values[key] = value
                            parts.append(key)
                    self.values[period_total] += self.values[valence_total]
                    if self.grouped:
                        lines.append(Line(valence_total, tuple(parts)))
                lines.append(Line(period_total, tuple(valence_totals)))
        self.hidden |= {k for k, v in self.values.items() if is_small(v, min_cell)}
        totals = {k for k in self.values if k[4] is None}  # type: ignore[index]
        self._settle(lines, totals)

    def _settle(self, lines: list[Line], totals: set[Hashable]) -> None:
        """Secondary suppression over this report's lines and those to the finer report.

        The totals (keys without a group) of a grouped report are the ungrouped report's: they
        are hidden exactly as it hides them, and nothing else here may hide them. The finer
        report's cells are published by it: fixed too."""
        values = dict(self.values)
        hidden = set(self.hidden)
        fixed: set[Hashable] = set()
        if self.grouped and self.ungrouped is not None:
            fixed = set(totals)
            hidden -= totals
            hidden |= {k for k in totals if k in self.ungrouped.hidden}
        own = list(self.values)
        if self.grouped:
            own = [k for k in own if k not in totals]  # the ungrouped report's lines did those
        lines = lines + self._finer_lines(own, values)
        fixed |= {k for k in values if k not in self.values}
        hidden |= self._finer_hidden()
        # Every line lies within one period (of this report's length: a finer line's parts
        # fall in its total's period), and `secondary` only hides members of a line that has
        # a hidden member: a period without anything hidden stays so. Its lines are left out
        # (the others keep their order, so the same cells are picked): at a million stories
        # few periods hold a small count.
        active = {self._period_of(k) for k in hidden}
        lines = [line for line in lines if self._period_of(line.total) in active]
        if lines:
            secondary(values, hidden, lines, may_hide=lambda key: key not in fixed)
        self.hidden = {k for k in hidden if k in self.values}

    def _period_of(self, key: Hashable) -> date:
        """The period (of this report's length) of a key of this report or a tagged finer one."""
        if key[0] == "finer":  # type: ignore[index]
            inner = key[1]  # type: ignore[index]
            return rollups.period_start(inner[_PERIOD_AT[inner[0]]], self.period)
        return key[_PERIOD_AT[key[0]]]  # type: ignore[index,no-any-return]

    def _protect_codes(self, min_cell: int) -> None:
        values: dict[Hashable, int] = {}
        hidden: set[Hashable] = set()
        lines: list[Line] = []
        totals: set[Hashable] = set()
        for period in self.periods:
            for valence in VALENCES:
                groups = self.coded_cells(period, valence)
                if not groups:
                    continue
                base_total_hidden = _story_key("confirmed", period, valence, None) in self.hidden
                # Per group (the same for every code): its key's group and whether its base is
                # hidden. A count is hidden with its base: count <= base <= stories - excluded,
                # so a visible count under a hidden base would pin the base down.
                by_group = [
                    (
                        group,
                        group if self.grouped else None,
                        self.cell("confirmed", period, valence, group) in self.hidden,
                    )
                    for group in groups
                ]
                codes = self.cells.codes
                for code in self.cells.code_names:
                    parts = []
                    total = 0
                    for group, key_group, base_hidden in by_group:
                        value = codes.get((period, code, valence, group), 0)
                        total += value
                        key = ("code", period, code, valence, key_group)  # _code_key
                        values[key] = value
                        if base_hidden or 0 < value < min_cell:  # or is_small
                            hidden.add(key)
                        parts.append(key)
                    if self.grouped:
                        total_key = _code_key(period, code, valence, None)
                        values[total_key] = total
                        totals.add(total_key)
                        if is_small(total, min_cell) or base_total_hidden:
                            hidden.add(total_key)
                        lines.append(Line(total_key, tuple(parts)))
        story_values, story_hidden = self.values, self.hidden
        self.values, self.hidden = values, hidden
        self._settle(lines, totals)
        values, hidden = self.values, self.hidden
        self.values, self.hidden = story_values, story_hidden
        self.values.update(values)
        self.hidden |= hidden

    def published(self) -> dict[Hashable, int | None]:
        """Every count as the report publishes it: None where hidden."""
        hidden = self.hidden
        return {k: None if k in hidden else v for k, v in self.values.items()}


def _sort_key(key: tuple[date, str, Group]) -> tuple[Any, ...]:
    period, valence, group = key
    return (period, valence, tuple((v is None, v) for v in group))


def _confirmed_share(
    stories: int | None, confirmed: int | None, excluded: int | None
) -> float | None:
    if stories is None or confirmed is None or excluded is None or stories - excluded <= 0:
        return None
    return confirmed / (stories - excluded)


# A cell without a row in the previous period (so no change_from_previous).
_NO_ROW = object()


def _hidden_periods(protected: _Protected | None, period: Period) -> set[date]:
    """The periods (of length `period`) in which `protected` hides something."""
    if protected is None:
        return set()
    found = set()
    for key in protected.hidden:
        found.add(rollups.period_start(key[_PERIOD_AT[key[0]]], period))  # type: ignore[index]
    return found


def _needed(cells: _Cells, min_cell: int, periods: set[date]) -> _Cells:
    """Only the periods with a small count, or with something hidden in the reports this one is
    tied to (`periods`). Every line lies within one period, so any other period hides nothing
    and cannot matter to a coarser report: at a million stories that leaves a handful of days to
    protect instead of every one. (A small total has a small part, so the leaf cells tell.)"""
    keep = set(periods)
    keep |= {
        p
        for (p, _v, _g), counts in cells.stories.items()
        if any(is_small(n, min_cell) for n in counts.values())
    }
    keep |= {p for (p, _c, _v, _g), n in cells.codes.items() if is_small(n, min_cell)}
    return _Cells(
        {k: v for k, v in cells.stories.items() if k[0] in keep},
        {k: v for k, v in cells.codes.items() if k[0] in keep},
        cells.code_names,
        cells.rolled_up,
    )


def _finer_query(query: TrendsQuery, finer_period: Period) -> TrendsQuery:
    """The same report at the finer period, over the very days this one covers (from/to snap
    to both periods)."""
    return replace(query, period=finer_period, date_from=query.first_day, date_to=query.last_day)


def _rolled_up(cells: _Cells, period: Period) -> _Cells:
    """The cells of the same report at a coarser period than `cells`' (each period is a sum of
    finer ones), summed here instead of read again: the same rows, the same GROUP BY sums (a
    cell of the coarser period has a row when one of its finer cells has)."""
    stories: dict[tuple[date, str, Group], dict[str, int]] = {}
    for (day, valence, group), counts in cells.stories.items():
        key = (rollups.period_start(day, period), valence, group)
        total = stories.get(key)
        if total is None:
            stories[key] = dict(counts)
        else:
            for measure, value in counts.items():
                total[measure] += value
    codes: dict[tuple[date, str, str, Group], int] = {}
    for (day, code, valence, group), n in cells.codes.items():
        code_key = (rollups.period_start(day, period), code, valence, group)
        codes[code_key] = codes.get(code_key, 0) + n
    return _Cells(stories, codes, cells.code_names, cells.rolled_up)


def _fetch_tied(session: Session, query: TrendsQuery, fetched: dict[TrendsQuery, _Cells]) -> _Cells:
    """`_fetch` for a suppressed report, which also reads the finer period's report (FINER):
    the finest one is read once and the coarser cells summed from it (a quarter report by two
    dimensions read ~107,000 monthly rows twice at a million stories). Only the plain codes
    (no codebook version mapping, no pairs), whose cells are sums of the rollups'."""
    if query in fetched:
        return fetched[query]
    finer_period = FINER.get(query.period)
    if finer_period is None or query.codebook_version_id is not None or query.cooccurrence:
        cells = _fetch(session, query)
    else:
        finer = _fetch_tied(session, _finer_query(query, finer_period), fetched)
        cells = _rolled_up(finer, query.period)
    fetched[query] = cells
    return cells


def _protect(
    session: Session,
    query: TrendsQuery,
    cells: _Cells | None,
    min_cell: int,
    memo: dict[tuple[Period, bool], _Protected],
    fetched: dict[TrendsQuery, _Cells] | None = None,
) -> _Protected:
    """The report's suppression, consistent with the reports a reader could subtract it from:
    the same report ungrouped (whose totals it shares) and at the finer period (whose cells
    add up to its cells), each protected the same way first. `cells` None: a report needed for
    what it hides only (fetched here, and only its periods that can hide something kept)."""
    grouped = bool(query.group_by)
    memo_key = (query.period, grouped)
    if memo_key in memo:
        return memo[memo_key]
    if fetched is None:
        fetched = {}
    ungrouped = finer = None
    if grouped:
        plain = replace(query, group_by=())
        ungrouped = _protect(
            session,
            plain,
            None if cells is None else _fetch_tied(session, plain, fetched),
            min_cell,
            memo,
            fetched,
        )
    finer_period = FINER.get(query.period)
    if finer_period is not None:
        finer_query = _finer_query(query, finer_period)
        finer = _protect(session, finer_query, None, min_cell, memo, fetched)
    if cells is None:
        tied = _hidden_periods(finer, query.period) | _hidden_periods(ungrouped, query.period)
        cells = _needed(_fetch_tied(session, query, fetched), min_cell, tied)
    protected = _Protected(
        cells, grouped, min_cell, period=query.period, ungrouped=ungrouped, finer=finer
    )
    memo[memo_key] = protected
    return protected


def trends_report(
    session: Session, query: TrendsQuery, *, min_cell: int = 5, suppress: bool = True
) -> TrendsReport:
    """Shares of confirmed stories by code, per period and valence (and group), suppressed
    unless `suppress` is False (the team's own figures)."""
    return TrendsReport.model_validate(
        trends_data(session, query, min_cell=min_cell, suppress=suppress)
    )


# TrendRow's and CellTotals' group fields, in their order: each row carries all four.
_GROUP_KEYS = ("survey_id", "touchpoint", "channel", "segment")


def trends_data(
    session: Session, query: TrendsQuery, *, min_cell: int = 5, suppress: bool = True
) -> dict[str, Any]:
    """The trends report as plain data: exactly `TrendsReport.model_dump(mode="python")` of
    `trends_report` (every field, in the models' order), so that the API can write it as JSON
    without building a model per row (a grouped report has thousands of rows).
    `tests/reports/test_trends.py` holds the two to the same bytes."""
    fetched: dict[TrendsQuery, _Cells] = {}
    cells = _fetch_tied(session, query, fetched) if suppress else _fetch(session, query)
    grouped = bool(query.group_by)
    # At most one row per story cell and code: refuse before the work, not after.
    if len(cells.stories) * max(1, len(cells.code_names)) > MAX_ROWS:
        raise Invalid(
            f"this report would have more than {MAX_ROWS} rows: choose a longer period, fewer "
            "groups or a shorter date range"
        )
    if suppress:
        protected = _protect(session, query, cells, min_cell, {}, fetched)
    else:
        protected = _Protected(cells, grouped, 0, period=query.period)

    fields_of = {
        group: {
            **dict.fromkeys(_GROUP_KEYS),
            **{
                ("survey_id" if f == "survey" else f): v
                for f, v in zip(query.group_by, group, strict=True)
            },
        }
        for group in {g for _p, _v, g in cells.stories}
    }
    shown = protected.published()
    # The same fields in _GROUP_KEYS' order, for the rows (written out, not merged per row).
    group_values = {group: tuple(fields.values()) for group, fields in fields_of.items()}

    def counts(keys: Sequence[Hashable]) -> dict[str, Any]:
        stories, confirmed, excluded = (shown[k] for k in keys)
        return {
            "stories": stories,
            "confirmed": confirmed,
            "excluded": excluded,
            "confirmed_share": _confirmed_share(stories, confirmed, excluded),
            "suppressed": stories is None or confirmed is None or excluded is None,
        }

    periods = [
        {
            **counts([_story_key(m, period, None, None) for m in MEASURES]),
            "period": period,
            "valences": {
                v: counts([_story_key(m, period, v, None) for m in MEASURES]) for v in VALENCES
            },
        }
        for period in protected.periods
    ]
    totals = [
        {
            **counts([protected.cell(m, period, valence, group) for m in MEASURES]),
            "period": period,
            "valence": valence,
            **fields_of[group],
        }
        for period, valence, group in sorted(cells.stories, key=_sort_key)
    ]

    row_codes = {code: _row_code(code) for code in cells.code_names}
    # The rows in two passes: their counts first (one tuple each), then the shares, intervals
    # and change tests of all rows at once (app.reports.intervals' array versions: the same
    # floats), then the row dictionaries.
    heads: list[tuple[Any, ...]] = []
    wilson_at: list[int] = []
    wilson_x: list[int] = []
    wilson_n: list[int] = []
    change_at: list[int] = []
    change_args: list[tuple[int, int, int, int]] = []
    # A row's change_from_previous: None, a dict, or (until the tests below) its previous period.
    changes: list[Any] = []
    suppressed_change = {"diff": None, "z": None, "p_value": None, "reason": "suppressed"}
    for period in protected.periods:
        previous = rollups.previous_period(period, query.period)
        # Per valence and group: the cell's base and, when the previous period has the row
        # (same code, valence and group) the change needs, the previous base.
        bases = {}
        for valence in VALENCES:
            previous_groups = set(protected.coded_cells(previous, valence))
            bases[valence] = [
                (
                    *group_values[group],
                    group if grouped else None,
                    shown[protected.cell("confirmed", period, valence, group)],
                    shown[protected.cell("confirmed", previous, valence, group)]
                    if group in previous_groups
                    else _NO_ROW,
                )
                for group in protected.coded_cells(period, valence)
            ]
        for code in cells.code_names:
            name, level = row_codes[code]
            for valence in VALENCES:
                for (
                    survey_id,
                    touchpoint,
                    channel,
                    segment,
                    cell_group,
                    base,
                    previous_base,
                ) in bases[valence]:
                    count = shown[("code", period, code, valence, cell_group)]
                    if count is not None and base is not None and base > 0:
                        wilson_at.append(len(heads))
                        wilson_x.append(count)
                        wilson_n.append(base)
                    if previous_base is _NO_ROW:
                        changes.append(None)
                    else:
                        previous_count = shown[("code", previous, code, valence, cell_group)]
                        if (
                            count is None
                            or base is None
                            or previous_count is None
                            or previous_base is None
                        ):
                            changes.append({"previous_period": previous, **suppressed_change})
                        else:
                            change_at.append(len(heads))
                            change_args.append((count, base, previous_count, previous_base))  # type: ignore[arg-type]
                            changes.append(previous)  # filled below
                    heads.append(
                        (period, name, level, valence, survey_id, touchpoint, channel, segment,
                         count, base)
                    )  # fmt: skip
    shares: list[float | None] = [None] * len(heads)
    lows: list[float | None] = [None] * len(heads)
    highs: list[float | None] = [None] * len(heads)
    for at, share, low, high in zip(wilson_at, *wilson_95_many(wilson_x, wilson_n), strict=True):
        shares[at], lows[at], highs[at] = share, low, high
    tests = two_proportion_many(*zip(*change_args, strict=True)) if change_args else []
    for at, (diff, z, p_value, reason) in zip(change_at, tests, strict=True):
        changes[at] = {
            "previous_period": changes[at],
            "diff": diff,
            "z": z,
            "p_value": p_value,
            "reason": reason,
        }
    rows = [
        {
            "period": period,
            "code": name,
            "level": level,
            "valence": valence,
            "survey_id": survey_id,
            "touchpoint": touchpoint,
            "channel": channel,
            "segment": segment,
            "count": count,
            "base": base,
            "share": share,
            "ci_low": low,
            "ci_high": high,
            "suppressed": count is None or base is None,
            "change_from_previous": change,
        }
        for (
            (period, name, level, valence, survey_id, touchpoint, channel, segment, count, base),
            share,
            low,
            high,
            change,
        ) in zip(heads, shares, lows, highs, changes, strict=True)
    ]

    return {
        "note": SHARES_NOTE,
        "definitions": dict(DEFINITIONS),
        "query": {
            "period": query.period,
            "group_by": list(query.group_by),
            "survey_id": query.survey_id,
            "date_from": query.first_day,
            "date_to": query.last_day,
            "codebook_version_id": query.codebook_version_id,
            "min_cell": min_cell,
            "suppression": suppress,
        },
        "codes": [c for c in cells.code_names if _row_code(c)[1] == "code"],
        "rollups": cells.rolled_up,
        "periods": periods,
        "totals": totals,
        "rows": rows,
    }
