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

import gc
from collections.abc import Hashable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import date
from functools import cached_property
from itertools import repeat
from operator import itemgetter
from typing import Any, cast

import numpy as np
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
    # The loop a grouped report runs tens of thousands of times: the period's and the group's
    # conversions looked up inline (a function call each only the first time).
    known_period, known_group, add = periods.get, groups.get, codes.get
    for code_sql in code_sqls:
        for row in _driver_rows(execute, code_sql):
            valence = row[2]
            if valence not in VALENCES:
                continue
            period = known_period(row[0]) or period_of(row[0])
            raw_group = tuple(row[3:n_at])
            group = known_group(raw_group)
            if group is None:
                group = group_of(raw_group)
            code_key = (period, row[1], valence, group)
            codes[code_key] = add(code_key, 0) + int(row[n_at])
    names.update(map(itemgetter(1), codes))
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

    Story counts (a few per cell) are kept by key (`story_values`, `story_hidden`). Code counts
    (one per code and coded cell: tens of thousands in a grouped report) are kept as arrays:
    `code_counts[code, column]` and `code_hidden`, one row per name of `cells.code_names`, one
    column per coded cell of `columns` (in report order: period, valence, group), and per
    (period, valence) block of columns the all-groups counts `total_counts[code, block]` and
    `total_hidden` (a grouped report's). The secondary suppression runs on keys as before, but
    only over the periods where something is hidden (`_protect_codes`).

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
        self.story_values: dict[Hashable, int] = {}
        self.story_hidden: set[Hashable] = set()
        self.grouped = grouped
        self.cells = cells
        self.period = period
        self.ungrouped = ungrouped
        self.finer = finer
        self.periods = sorted({p for p, _v, _g in cells.stories})
        self.groups: dict[tuple[date, str], list[Group]] = {}
        for period_start, valence, group in _sorted_cells(cells.stories):
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
                or self.cell("confirmed", period, valence, g) in self.story_hidden
            ]
        # The code counts' columns: the coded cells in report order, in blocks per (period,
        # valence) (only non-empty ones), and each period's columns.
        self.columns: list[tuple[date, str, Group]] = []
        self.blocks: list[tuple[date, str, int, int]] = []
        self.period_columns: dict[date, tuple[int, int]] = {}
        for period in self.periods:
            first = len(self.columns)
            for valence in VALENCES:
                groups = self.coded_cells(period, valence)
                if groups:
                    start = len(self.columns)
                    self.columns.extend((period, valence, g) for g in groups)
                    self.blocks.append((period, valence, start, len(self.columns)))
            self.period_columns[period] = (first, len(self.columns))
        self.column_of = {cell: at for at, cell in enumerate(self.columns)}
        self.block_of = {(p, v): at for at, (p, v, _s, _e) in enumerate(self.blocks)}

    def _finer_lines(self, keys: list[Hashable], values: dict[Hashable, int]) -> list[Line]:
        """Each key of this report = the sum of the same key over the finer periods it covers;
        the finer report's figures enter `values` under tagged keys, hidden as it hides them."""
        finer = self.finer
        if finer is None:
            return []
        parts: dict[Hashable, list[Hashable]] = {}
        for key, value in finer.all_values:
            coarse = list(cast(tuple[Any, ...], key))
            position = _PERIOD_AT[coarse[0]]
            coarse[position] = rollups.period_start(coarse[position], self.period)
            parts.setdefault(tuple(coarse), []).append(_finer_key(key))
            values[_finer_key(key)] = value
        return [Line(key, tuple(parts[key])) for key in keys if key in parts]

    def _finer_hidden(self) -> set[Hashable]:
        if self.finer is None:
            return set()
        return {_finer_key(k) for k in self.finer.all_hidden}

    def _protect_stories(self, min_cell: int) -> None:
        lines: list[Line] = []
        values = self.story_values
        stories, grouped = self.cells.stories, self.grouped
        for period in self.periods:
            for measure in MEASURES:
                period_total = _story_key(measure, period, None, None)
                values[period_total] = 0
                valence_totals = []
                for valence in VALENCES:
                    valence_total = _story_key(measure, period, valence, None)
                    valence_totals.append(valence_total)
                    values[valence_total] = 0  # (before its parts, in report order)
                    parts = []
                    total = 0
                    for group in self.groups.get((period, valence), []):
                        value = stories[(period, valence, group)][measure]
                        total += value
                        if grouped:
                            key = _story_key(measure, period, valence, group)  # self.cell
                            values[key] = value
                            parts.append(key)
                    values[valence_total] = total
                    values[period_total] += total
                    if self.grouped:
                        lines.append(Line(valence_total, tuple(parts)))
                lines.append(Line(period_total, tuple(valence_totals)))
        hidden = {k for k, v in values.items() if is_small(v, min_cell)}
        totals = {k for k in values if k[4] is None}  # type: ignore[index]
        self.story_hidden = self._settle(values, hidden, lines, totals)

    def _settle(
        self,
        own: dict[Hashable, int],
        own_hidden: set[Hashable],
        lines: list[Line],
        totals: set[Hashable],
    ) -> set[Hashable]:
        """Secondary suppression over this report's lines and those to the finer report: the
        keys of `own` to hide, given those hidden so far (`own_hidden`).

        The totals (keys without a group) of a grouped report are the ungrouped report's: they
        are hidden exactly as it hides them, and nothing else here may hide them. The finer
        report's cells are published by it: fixed too."""
        if not own_hidden and self.ungrouped is None and self.finer is None:
            return set()  # nothing hidden and nothing it is tied to: nothing to settle
        values = dict(own)
        hidden = set(own_hidden)
        fixed: set[Hashable] = set()
        if self.grouped and self.ungrouped is not None:
            fixed = set(totals)
            hidden -= totals
            hidden |= {k for k in totals if self.ungrouped.is_hidden(k)}
        keys = list(own)
        if self.grouped:
            keys = [k for k in keys if k not in totals]  # the ungrouped report's lines did those
        lines = lines + self._finer_lines(keys, values)
        fixed |= {k for k in values if k not in own}
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
        return {k for k in hidden if k in own}

    def _period_of(self, key: Hashable) -> date:
        """The period (of this report's length) of a key of this report or a tagged finer one."""
        if key[0] == "finer":  # type: ignore[index]
            inner = key[1]  # type: ignore[index]
            return rollups.period_start(inner[_PERIOD_AT[inner[0]]], self.period)
        return key[_PERIOD_AT[key[0]]]  # type: ignore[index,no-any-return]

    def _protect_codes(self, min_cell: int) -> None:
        """Primary suppression on the arrays; then, in the periods where something is hidden
        (here, as the ungrouped report hides the totals, or in the finer report), the
        secondary suppression over keys exactly as for the stories (`_settle`)."""
        names = self.cells.code_names
        self.code_row = {name: at for at, name in enumerate(names)}
        shape = (len(names), len(self.columns))
        counts = np.zeros(shape, dtype=np.int64)
        if shape[0] and shape[1] and self.cells.codes:
            # Each count's row and column, looked up a column of keys at a time (map and zip
            # in C: a loop over tens of thousands of keys cost several milliseconds).
            periods, codes, valences, groups = zip(*self.cells.codes, strict=True)
            at_column = np.fromiter(
                map(self.column_of.get, zip(periods, valences, groups, strict=True), repeat(-1)),
                dtype=np.int64,
                count=len(periods),
            )
            at_code = np.fromiter(map(self.code_row.__getitem__, codes), np.int64, len(codes))
            ns = np.fromiter(self.cells.codes.values(), np.int64, len(codes))
            published = at_column >= 0  # a code count without a coded cell is not published
            counts[at_code[published], at_column[published]] = ns[published]
        base_hidden = np.array(
            [self.cell("confirmed", p, v, g) in self.story_hidden for p, v, g in self.columns],
            dtype=bool,
        )
        # A count is hidden with its base: count <= base <= stories - excluded, so a visible
        # count under a hidden base would pin the base down.
        hidden = ((counts > 0) & (counts < min_cell)) | base_hidden[np.newaxis, :]
        starts = [start for _p, _v, start, _e in self.blocks]
        if self.grouped and shape[0] and starts:
            totals = np.add.reduceat(counts, starts, axis=1)
        else:
            totals = np.zeros((shape[0], len(self.blocks) if self.grouped else 0), np.int64)
        base_total_hidden = np.array(
            [
                _story_key("confirmed", p, v, None) in self.story_hidden
                for p, v, _s, _e in self.blocks
            ]
            if self.grouped
            else [],
            dtype=bool,
        )
        primary_totals = (totals > 0) & (totals < min_cell) | base_total_hidden[np.newaxis, :]
        if self.grouped and self.ungrouped is not None:
            published_totals = self.ungrouped.hidden_totals_of(self, names)
        else:
            published_totals = primary_totals
        self.code_counts, self.code_hidden = counts, hidden
        self.total_counts, self.total_hidden = totals, published_totals

        # The periods `_settle` works on: with a hidden key of this report or the finer one.
        active = {self.columns[c][0] for c in np.flatnonzero(hidden.any(axis=0)).tolist()}
        active |= {self.blocks[b][0] for b in np.flatnonzero(published_totals.any(axis=0)).tolist()}
        active |= {self._period_of(k) for k in self._finer_hidden()}
        if not active:
            return
        # The keys, values and lines of those periods, in the order `_settle` has always seen
        # them (per period, valence and code: the group cells, then their total).
        values: dict[Hashable, int] = {}
        own_hidden: set[Hashable] = set()
        lines: list[Line] = []
        total_keys: set[Hashable] = set()
        taken: list[tuple[int, int, int]] = []  # (block, its first column, its end)
        for block, (period, valence, start, end) in enumerate(self.blocks):
            if period not in active:
                continue
            taken.append((block, start, end))
            key_groups = [self.columns[c][2] if self.grouped else None for c in range(start, end)]
            for row, code in enumerate(names):
                parts = []
                row_counts = counts[row, start:end].tolist()
                row_hidden = hidden[row, start:end].tolist()
                for key_group, value, is_hidden in zip(
                    key_groups, row_counts, row_hidden, strict=True
                ):
                    key = ("code", period, code, valence, key_group)  # _code_key
                    values[key] = value
                    if is_hidden:
                        own_hidden.add(key)
                    parts.append(key)
                if self.grouped:
                    total_key = _code_key(period, code, valence, None)
                    values[total_key] = int(totals[row, block])
                    total_keys.add(total_key)
                    if primary_totals[row, block]:
                        own_hidden.add(total_key)
                    lines.append(Line(total_key, tuple(parts)))
        settled = self._settle(values, own_hidden, lines, total_keys)
        for block, start, end in taken:
            period, valence = self.blocks[block][:2]
            for row, code in enumerate(names):
                for column in range(start, end):
                    key_group = self.columns[column][2] if self.grouped else None
                    hidden[row, column] = ("code", period, code, valence, key_group) in settled
                if self.grouped:
                    published_totals[row, block] = _code_key(period, code, valence, None) in settled

    def hidden_totals_of(self, grouped: _Protected, names: list[str]) -> np.ndarray:
        """For a grouped report of this (ungrouped) one: per code of `names` and block of
        `grouped`, whether this report hides the all-groups count."""
        found = np.zeros((len(names), len(grouped.blocks)), dtype=bool)
        rows = [self.code_row.get(name, -1) for name in names]
        for block, (period, valence, _s, _e) in enumerate(grouped.blocks):
            column = self.column_of.get((period, valence, ()))
            if column is None:
                continue
            for at, row in enumerate(rows):
                if row >= 0:
                    found[at, block] = self.code_hidden[row, column]
        return found

    def is_hidden(self, key: Hashable) -> bool:
        """Whether a key (`_story_key`, `_code_key`) of this report is hidden."""
        if key[0] == "story":  # type: ignore[index]
            return key in self.story_hidden
        _kind, period, code, valence, group = cast(tuple[Any, ...], key)
        row = self.code_row.get(code)
        if row is None:
            return False
        if group is None and self.grouped:
            block = self.block_of.get((period, valence))
            return block is not None and bool(self.total_hidden[row, block])
        column = self.column_of.get((period, valence, group if self.grouped else ()))
        return column is not None and bool(self.code_hidden[row, column])

    @cached_property
    def _code_items(self) -> list[tuple[Hashable, int, bool]]:
        """Every code key with its count and whether it is hidden, in report order (per period,
        valence and code: the group cells, then their total). Read by the coarser report once
        this one is protected (its cells fixed), and kept."""
        items: list[tuple[Hashable, int, bool]] = []
        names = self.cells.code_names
        for block, (period, valence, start, end) in enumerate(self.blocks):
            key_groups = [self.columns[c][2] if self.grouped else None for c in range(start, end)]
            for row, code in enumerate(names):
                for key_group, value, is_hidden in zip(
                    key_groups,
                    self.code_counts[row, start:end].tolist(),
                    self.code_hidden[row, start:end].tolist(),
                    strict=True,
                ):
                    items.append((("code", period, code, valence, key_group), value, is_hidden))
                if self.grouped:
                    items.append(
                        (
                            _code_key(period, code, valence, None),
                            int(self.total_counts[row, block]),
                            bool(self.total_hidden[row, block]),
                        )
                    )
        return items

    @cached_property
    def all_values(self) -> list[tuple[Hashable, int]]:
        """Every count of the report by its key: the stories', then the codes'."""
        return [*self.story_values.items(), *((k, v) for k, v, _h in self._code_items)]

    @cached_property
    def all_hidden(self) -> set[Hashable]:
        """Every hidden key of the report."""
        return self.story_hidden | {k for k, _v, hidden in self._code_items if hidden}

    def hidden_periods(self) -> set[date]:
        """The periods of this report in which something is hidden."""
        found = {key[_PERIOD_AT["story"]] for key in self.story_hidden}  # type: ignore[index]
        found |= {self.columns[c][0] for c in np.flatnonzero(self.code_hidden.any(axis=0)).tolist()}
        if self.grouped:
            found |= {
                self.blocks[b][0] for b in np.flatnonzero(self.total_hidden.any(axis=0)).tolist()
            }
        return found

    def shown_stories(self) -> dict[Hashable, int | None]:
        """Every story count as the report publishes it: None where hidden."""
        hidden = self.story_hidden
        return {k: None if k in hidden else v for k, v in self.story_values.items()}


def _sorted_cells(cells: Iterable[tuple[date, str, Group]]) -> list[tuple[date, str, Group]]:
    """Story cells in report order: period, valence, then the group's values (None last),
    each distinct group's sort key made once (a grouped report has thousands of cells and a
    few hundred groups)."""
    cells = list(cells)
    order = {g: tuple((v is None, v) for v in g) for g in {group for _p, _v, group in cells}}
    return sorted(cells, key=lambda cell: (cell[0], cell[1], order[cell[2]]))


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
    return {rollups.period_start(p, period) for p in protected.hidden_periods()}


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


def _trend_rows(
    protected: _Protected, query: TrendsQuery, group_values: dict[Group, tuple[Any, ...]]
) -> list[dict[str, Any]]:
    """The report's rows (TrendRow dumps): per period, code, valence and coded group, i.e. the
    columns of a period for each code in turn. Their counts, bases, shares, intervals and
    change tests are taken and computed on arrays, a column per field (app.reports.intervals'
    array versions: the same floats as the scalar functions), then written out row by row."""
    columns = protected.columns
    shown = protected.shown_stories()
    cell = protected.cell
    previous_of = {p: rollups.previous_period(p, query.period) for p in protected.periods}
    # Per column: its base (-1 where hidden) and the previous period's column (-1: no row).
    column_bases = [shown[cell("confirmed", p, v, g)] for p, v, g in columns]
    bases_at = np.array([-1 if b is None else b for b in column_bases], dtype=np.int64)
    previous_at = np.array(
        [protected.column_of.get((previous_of[p], v, g), -1) for p, v, g in columns],
        dtype=np.int64,
    )
    # Per row: its code (row of the counts) and its column.
    names = [_row_code(name) for name in protected.cells.code_names]
    code_parts, column_parts = [], []
    for period in protected.periods:
        first, end = protected.period_columns[period]
        code_parts.append(np.repeat(np.arange(len(names), dtype=np.int64), end - first))
        column_parts.append(np.tile(np.arange(first, end, dtype=np.int64), len(names)))
    code_at = np.concatenate(code_parts) if code_parts else np.zeros(0, np.int64)
    column_at = np.concatenate(column_parts) if column_parts else np.zeros(0, np.int64)

    counts = protected.code_counts[code_at, column_at]
    hidden = protected.code_hidden[code_at, column_at]
    bases = bases_at[column_at]
    no_base = bases < 0
    with_interval = ~hidden & ~no_base & (bases > 0)
    previous = previous_at[column_at]
    has_previous = previous >= 0
    before = np.where(has_previous, previous, 0)
    previous_counts = protected.code_counts[code_at, before]
    previous_hidden = protected.code_hidden[code_at, before]
    previous_bases = bases_at[before]
    suppressed_change = has_previous & (hidden | no_base | previous_hidden | (previous_bases < 0))
    tested = has_previous & ~suppressed_change

    n_rows = len(code_at)
    interval_shares, interval_lows, interval_highs = wilson_95_many(
        counts[with_interval].tolist(), bases[with_interval].tolist()
    )
    shares: list[float | None]
    lows: list[float | None]
    highs: list[float | None]
    if len(interval_shares) == n_rows:  # every row has its interval (no small count, no 0 base)
        shares, lows, highs = interval_shares, interval_lows, interval_highs  # type: ignore[assignment]
    else:
        shares, lows, highs = [None] * n_rows, [None] * n_rows, [None] * n_rows
        for at, share, low, high in zip(
            np.flatnonzero(with_interval).tolist(),
            interval_shares,
            interval_lows,
            interval_highs,
            strict=True,
        ):
            shares[at], lows[at], highs[at] = share, low, high
    # A row's change_from_previous: None (no previous row), suppressed, or its z-test.
    changes: list[dict[str, Any] | None] = [None] * n_rows
    previous_periods = [previous_of[p] for p, _v, _g in columns]
    for at in np.flatnonzero(suppressed_change).tolist():
        changes[at] = {
            "previous_period": previous_periods[int(column_at[at])],
            "diff": None,
            "z": None,
            "p_value": None,
            "reason": "suppressed",
        }
    at_tested = np.flatnonzero(tested).tolist()
    if at_tested:
        tests = two_proportion_many(
            counts[tested].tolist(),
            bases[tested].tolist(),
            previous_counts[tested].tolist(),
            previous_bases[tested].tolist(),
        )
        for at, column, (diff, z, p_value, reason) in zip(
            at_tested, column_at[tested].tolist(), tests, strict=True
        ):
            changes[at] = {
                "previous_period": previous_periods[column],
                "diff": diff,
                "z": z,
                "p_value": p_value,
                "reason": reason,
            }

    # Row by row, in the order laid out above: each period's cells (the same for every code)
    # for each code in turn, the per-row values taken from one iterator (zip takes from its
    # arguments left to right and stops at the first exhausted: a span's end takes nothing).
    # A row is a copy of its cell's fields (made once per period and cell) with the fields of
    # the code set: cheaper than a literal of all fifteen per row.
    cells = [
        (v, *group_values[g], base) for (_p, v, g), base in zip(columns, column_bases, strict=True)
    ]
    values = zip(counts.tolist(), hidden.tolist(), shares, lows, highs, changes, strict=True)
    rows: list[dict[str, Any]] = []
    append = rows.append
    for period in protected.periods:
        first, end = protected.period_columns[period]
        templates = [
            {
                "period": period,
                "code": None,
                "level": None,
                "valence": valence,
                "survey_id": survey_id,
                "touchpoint": touchpoint,
                "channel": channel,
                "segment": segment,
                "count": None,
                "base": base,
                "share": None,
                "ci_low": None,
                "ci_high": None,
                "suppressed": base is None,
                "change_from_previous": None,
            }
            for valence, survey_id, touchpoint, channel, segment, base in cells[first:end]
        ]
        for name, level in names:
            for template, (count, is_hidden, share, low, high, change) in zip(
                templates, values, strict=False
            ):
                row = template.copy()
                row["code"] = name
                row["level"] = level
                if is_hidden:
                    row["suppressed"] = True
                else:
                    row["count"] = count
                row["share"] = share
                row["ci_low"] = low
                row["ci_high"] = high
                row["change_from_previous"] = change
                append(row)
    assert len(rows) == n_rows
    return rows


def trends_data(
    session: Session, query: TrendsQuery, *, min_cell: int = 5, suppress: bool = True
) -> dict[str, Any]:
    """The trends report as plain data: exactly `TrendsReport.model_dump(mode="python")` of
    `trends_report` (every field, in the models' order), so that the API can write it as JSON
    without building a model per row (a grouped report has thousands of rows).
    `tests/reports/test_trends.py` holds the two to the same bytes."""
    with collector_paused():
        return _trends_data(session, query, min_cell=min_cell, suppress=suppress)


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a report is built. A grouped report makes tens
    of thousands of dicts and tuples, none in a cycle (reference counting frees them all the
    same), and their number set off a full collection of the whole heap in the middle of the
    report in about every other run at a million stories (~100 ms on top of ~100). Those still
    alive when the pause ends are swept once by the next young collection (~5 ms for 13,440
    rows): a caller that writes the report out and drops it inside the pause saves that. The
    switch is process-wide: a pause begun while the collector is off (another thread's pause)
    does nothing, so the collector is on again as soon as the pause that turned it off ends."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _trends_data(
    session: Session, query: TrendsQuery, *, min_cell: int, suppress: bool
) -> dict[str, Any]:
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
    shown = protected.shown_stories()

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
    # In report order (period, valence, group): protected.groups holds the cells so sorted.
    totals = [
        {
            **counts([protected.cell(m, period, valence, group) for m in MEASURES]),
            "period": period,
            "valence": valence,
            **fields_of[group],
        }
        for (period, valence), groups in protected.groups.items()
        for group in groups
    ]
    # The same fields in _GROUP_KEYS' order, for the rows.
    group_values = {group: tuple(fields.values()) for group, fields in fields_of.items()}
    rows = _trend_rows(protected, query, group_values)

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
