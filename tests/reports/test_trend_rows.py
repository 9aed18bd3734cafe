"""The trend rows, built on arrays (counts, bases and hidden cells taken by column, the shares,
intervals and change tests of all rows at once), against the same rows worked out one at a
time from the report's own published figures with the scalar functions."""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from datetime import date
from typing import Any

import pytest

from app.models.incidents import VALENCES
from app.reports import rollups
from app.reports.intervals import two_proportion, wilson_95
from app.reports.trends import TrendsQuery, trends_data
from tests.reports.conftest import CODES, StorySpec

GROUP_FIELDS = ("survey_id", "touchpoint", "channel", "segment")


def _bits(value: Any) -> Any:
    return struct.pack("<d", value) if isinstance(value, float) else value


def _group(item: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(item[k] for k in GROUP_FIELDS)


@pytest.fixture
def varied(
    survey_id: int, version_id: Callable[..., int], add_stories: Callable[..., list[int]]
) -> int:
    """Seven months of stories over touchpoints, channels and segments, large and small
    cells (so that viewers' reports hide some, and the rows are many enough for the arrays)."""
    rng = random.Random(7)
    specs = []
    for month in range(1, 8):
        for _ in range(rng.randint(60, 110)):
            status = rng.choices(("coded", "new", "excluded"), (10, 1, 1))[0]
            codes = tuple(c for c in CODES if rng.random() < 0.35)
            specs.append(
                StorySpec(
                    survey_id,
                    date(2025, month, rng.randint(1, 28)),
                    rng.choice(VALENCES),
                    codes if status == "coded" else (),
                    status=status,
                    exclusion_reason="x" if status == "excluded" else None,
                    touchpoint=rng.choice(("Check-in", "Gate", "Lounge", None)),
                    channel=rng.choices(("Phone", "App", None), (6, 3, 1))[0],
                    segment=rng.choice(("business", "leisure", None)),
                )
            )
    add_stories(specs, version_id())
    return survey_id


@pytest.mark.parametrize(
    ("period", "group_by", "suppress"),
    [
        ("month", ("touchpoint", "channel"), True),
        ("month", ("touchpoint", "channel"), False),
        ("quarter", ("channel", "segment"), True),
        ("quarter", ("touchpoint", "channel", "segment"), False),
        ("month", (), True),
        ("all", ("touchpoint",), True),
    ],
)
def test_rows_equal_the_scalar_arithmetic_row_by_row(
    period: Any, group_by: Any, suppress: bool, varied: int, db: Callable[[], Any]
) -> None:
    query = TrendsQuery(period=period, group_by=group_by)
    with db() as session:
        report = trends_data(session, query, suppress=suppress)
    rows = report["rows"]
    # Grouped by month or quarter, the rows are many enough for the interval functions' array
    # versions.
    many = bool(group_by) and period != "all"
    assert len(rows) > 64 or not many
    assert not suppress or not group_by or any(r["suppressed"] for r in rows)

    # The rows there must be, in order: per period, code, valence and group (in the totals'
    # order), the cells with some confirmed stories or a hidden base.
    bases = {(t["period"], t["valence"], _group(t)): t["confirmed"] for t in report["totals"]}
    expected = [
        (p["period"], code, valence, group)
        for p in report["periods"]
        for code in report["codes"]
        for valence in VALENCES
        for (cell_period, cell_valence, group), base in bases.items()
        if cell_period == p["period"] and cell_valence == valence and base != 0
    ]
    keys = [(r["period"], r["code"], r["valence"], _group(r)) for r in rows]
    assert keys == expected
    by_key = dict(zip(keys, rows, strict=True))

    changes = 0
    for (row_period, code, valence, group), row in by_key.items():
        count, base = row["count"], bases[(row_period, valence, group)]
        assert row["base"] == base
        assert row["suppressed"] == (count is None or base is None)
        if count is not None and base is not None and base > 0:
            low, high = wilson_95(count, base)
            assert [_bits(row[k]) for k in ("share", "ci_low", "ci_high")] == [
                _bits(count / base),
                _bits(low),
                _bits(high),
            ]
        else:
            assert row["share"] is row["ci_low"] is row["ci_high"] is None
        previous = rollups.previous_period(row_period, query.period)
        before = by_key.get((previous, code, valence, group))
        change = row["change_from_previous"]
        if before is None:
            assert change is None
            continue
        changes += 1
        previous_base = bases[(previous, valence, group)]
        if None in (count, base, before["count"], previous_base):
            want: tuple[Any, ...] = (None, None, None, "suppressed")
        else:
            want = two_proportion(count, base, before["count"], previous_base)
        assert change == {
            "previous_period": previous,
            **dict(zip(("diff", "z", "p_value", "reason"), want, strict=True)),
        }
        assert [_bits(change[k]) for k in ("diff", "z", "p_value")] == [_bits(v) for v in want[:3]]
    assert changes > 64 or not many
