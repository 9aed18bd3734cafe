"""Small-cell suppression: the rule on its own, then an attacker who holds a grouped and an
ungrouped trends report and tries to recover every hidden count, by subtraction along each
published sum and by solving all published sums at once. Neither may succeed."""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable
from datetime import date
from fractions import Fraction
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.reports.suppression import Line, primary, secondary, unrecoverable
from tests.reports.conftest import API, StorySpec

MEASURES = ("stories", "confirmed", "excluded")


def test_one_hidden_part_takes_the_smallest_positive_other_part() -> None:
    values: dict[Hashable, int] = {"a": 3, "b": 0, "c": 12, "d": 9, "total": 24}
    hidden = primary(values, 5)
    assert hidden == {"a"}
    line = Line("total", ("a", "b", "c", "d"))
    secondary(values, hidden, [line])
    assert hidden == {"a", "d"}  # d (9) rather than the zero b: a + d = 12 is a wide range
    assert unrecoverable(hidden, [line])


def test_zero_or_total_when_nothing_else_is_left() -> None:
    values: dict[Hashable, int] = {"a": 3, "b": 0, "total": 3}
    hidden = secondary(values, {"a"}, [Line("total", ("a", "b"))])
    assert hidden == {"a", "b"}
    values = {"a": 2, "total": 9, "outer": 20, "x": 11}
    lines = [Line("total", ("a",)), Line("outer", ("total", "x"))]
    # a single part: only the total can go with it; that in turn takes x in the outer line
    hidden = secondary(values, {"a"}, lines)
    assert hidden == {"a", "total", "x"}
    assert unrecoverable(hidden, lines)


def test_totals_published_elsewhere_are_never_hidden_here() -> None:
    values: dict[Hashable, int] = {"g1": 4, "g2": 6, "g3": 30, "all": 40}
    hidden = secondary(
        values, {"g1"}, [Line("all", ("g1", "g2", "g3"))], may_hide=lambda k: k != "all"
    )
    assert hidden == {"g1", "g2"}


def test_suppression_spreads_along_lines_until_none_has_one_hidden() -> None:
    # A 2-level tree: the complement in one line creates a single hidden member in the next.
    values: dict[Hashable, int] = {
        "T": 40,
        "A": 20,
        "B": 20,
        "a1": 2,
        "a2": 18,
        "b1": 10,
        "b2": 10,
    }
    lines = [Line("T", ("A", "B")), Line("A", ("a1", "a2")), Line("B", ("b1", "b2"))]
    hidden = secondary(values, primary(values, 5), lines)
    assert hidden == {"a1", "a2"}
    values["A"] = 3
    values["a2"] = 1
    hidden = secondary(values, primary(values, 5), lines)
    assert {"A", "a1", "a2", "B", "b1"} <= hidden and unrecoverable(hidden, lines)


# --- The attacker ------------------------------------------------------------------------------


def determined(equations: list[tuple[dict[Hashable, int], int]]) -> set[Hashable]:
    """Unknowns whose value follows from the equations (sum of coef * unknown = constant):
    Gauss-Jordan over the rationals; an unknown is determined iff a reduced row has it alone."""
    rows = [
        ({k: Fraction(v) for k, v in coefs.items() if v}, Fraction(c)) for coefs, c in equations
    ]
    rows = [r for r in rows if r[0]]
    pivots: list[tuple[Hashable, dict[Hashable, Fraction], Fraction]] = []
    for coefs, constant in rows:
        for var, pivot_coefs, pivot_constant in pivots:
            factor = coefs.get(var)
            if factor:
                for k, v in pivot_coefs.items():
                    coefs[k] = coefs.get(k, Fraction(0)) - factor * v
                constant -= factor * pivot_constant
                coefs = {k: v for k, v in coefs.items() if v}
        if not coefs:
            assert constant == 0, "the published figures contradict each other"
            continue
        var = next(iter(coefs))
        scale = coefs[var]
        coefs = {k: v / scale for k, v in coefs.items()}
        constant /= scale
        # keep the earlier pivot rows reduced
        updated = []
        for other, other_coefs, other_constant in pivots:
            factor = other_coefs.get(var)
            if factor:
                other_coefs = dict(other_coefs)
                for k, v in coefs.items():
                    other_coefs[k] = other_coefs.get(k, Fraction(0)) - factor * v
                other_coefs = {k: v for k, v in other_coefs.items() if v}
                other_constant -= factor * constant
            updated.append((other, other_coefs, other_constant))
        pivots = [*updated, (var, coefs, constant)]
    return {var for var, coefs, _c in pivots if len(coefs) == 1}


def test_the_solver_finds_what_subtraction_finds() -> None:
    # x + y = 5, y + z = 7, x + z = 6: each is determined although every equation has two unknowns
    assert determined([({"x": 1, "y": 1}, 5), ({"y": 1, "z": 1}, 7), ({"x": 1, "z": 1}, 6)]) == {
        "x",
        "y",
        "z",
    }
    assert determined([({"x": 1, "y": 1}, 5), ({"y": 1, "z": 1}, 7)]) == set()
    assert determined([({"x": 1}, 5), ({"x": 1, "y": 1}, 7)]) == {"x", "y"}


class Published:
    """What the attacker reads: every figure of the responses, under a key naming the quantity;
    a figure published twice must be hidden in both or in neither."""

    def __init__(self) -> None:
        self.values: dict[Hashable, int | None] = {}

    def put(self, key: Hashable, value: int | None) -> None:
        if key in self.values:
            assert (self.values[key] is None) == (value is None), f"{key} hidden in one report only"
            assert self.values[key] == value
        self.values[key] = value


def read_reports(
    grouped: dict[str, Any], ungrouped: dict[str, Any], fields: list[str]
) -> tuple[Published, list[tuple[Hashable, list[Hashable]]]]:
    published = Published()
    sums: list[tuple[Hashable, list[Hashable]]] = []
    valences = ("satisfying", "dissatisfying")
    for report, grouped_by in ((grouped, fields), (ungrouped, [])):
        for period in report["periods"]:
            p = period["period"]
            for m in MEASURES:
                published.put(("story", m, p), period[m])
                for v in valences:
                    published.put(("story", m, p, v), period["valences"][v][m])
        for total in report["totals"]:
            group = tuple(total[f] for f in grouped_by)
            for m in MEASURES:
                key = ("story", m, total["period"], total["valence"]) + (
                    (group,) if grouped_by else ()
                )
                published.put(key, total[m])
        for row in report["rows"]:
            group = tuple(row[f] for f in grouped_by)
            key = ("code", row["period"], row["code"], row["valence"]) + (
                (group,) if grouped_by else ()
            )
            published.put(key, row["count"])
            base_key = ("story", "confirmed", row["period"], row["valence"])
            published.put(base_key + ((group,) if grouped_by else ()), row["base"])
            if row["count"] is None or row["base"] is None:
                assert row["share"] is None and row["ci_low"] is None and row["ci_high"] is None
                change = row["change_from_previous"]
                assert change is None or change["diff"] is None
    # The sums a reader knows hold.
    groups_of: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    for total in grouped["totals"]:
        groups_of.setdefault((total["period"], total["valence"]), []).append(
            tuple(total[f] for f in fields)
        )
    for period in grouped["periods"]:
        p = period["period"]
        for m in MEASURES:
            sums.append((("story", m, p), [("story", m, p, v) for v in valences]))
            for v in valences:
                sums.append(
                    (("story", m, p, v), [("story", m, p, v, g) for g in groups_of.get((p, v), [])])
                )
        for code in grouped["codes"]:
            for v in valences:
                total_key = ("code", p, code, v)
                parts = [
                    ("code", p, code, v, g)
                    for g in groups_of.get((p, v), [])
                    if ("code", p, code, v, g) in published.values
                ]
                if total_key in published.values or parts:
                    # A cell without code rows has a base visibly 0, so its count is a known 0.
                    sums.append((total_key, parts))
    return published, sums


def seed_random(
    rng: random.Random, survey_id: int, version: int, add: Callable[..., list[int]]
) -> None:
    specs = []
    for month in (1, 2, 3):
        for touchpoint in ("Check-in", "Gate", "On board", None):
            for channel in ("Phone", None):
                for valence in ("satisfying", "dissatisfying"):
                    for _ in range(rng.choice((0, 1, 2, 3, 4, 6, 9, 14))):
                        status = rng.choices(("coded", "new", "excluded"), (8, 1, 1))[0]
                        codes = tuple(
                            c
                            for c, p in (
                                ("complaint", 0.6),
                                ("extra_mile", 0.35),
                                ("owner_error", 0.15),
                            )
                            if rng.random() < p
                        )
                        specs.append(
                            StorySpec(
                                survey_id,
                                date(2025, month, rng.randint(1, 28)),
                                valence,
                                codes if status == "coded" else (),
                                status=status,
                                touchpoint=touchpoint,
                                channel=channel,
                            )
                        )
    add(specs, version)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
@pytest.mark.parametrize("group_by", ["touchpoint", "touchpoint,channel"])
def test_no_hidden_count_can_be_recovered(
    seed: int,
    group_by: str,
    survey_id: int,
    version_id: Callable[..., int],
    add_stories: Callable[..., list[int]],
    client: TestClient,
    token_for: Callable[..., dict[str, str]],
) -> None:
    seed_random(random.Random(seed), survey_id, version_id(), add_stories)
    viewer = token_for("viewer")
    grouped = client.get(f"{API}/trends", params={"group_by": group_by}, headers=viewer).json()
    ungrouped = client.get(f"{API}/trends", headers=viewer).json()
    fields = group_by.split(",")
    published, sums = read_reports(grouped, ungrouped, fields)
    hidden = {k for k, v in published.values.items() if v is None}
    assert hidden, "the seed should produce small cells"

    # Every primary cell is hidden: no published count is between 1 and 4.
    assert all(v is None or v == 0 or v >= 5 for v in published.values.values())

    # Attack 1: subtraction along each published sum.
    for total, parts in sums:
        members = [total, *parts]
        unknown = [m for m in members if published.values.get(m, 0) is None]
        assert len(unknown) != 1, f"{unknown[0]} = {total} minus the other parts"

    # Attack 2: all sums at once (exact linear algebra over the hidden counts).
    equations = []
    for total, parts in sums:
        coefs: dict[Hashable, int] = {}
        constant = 0
        for key, sign in [(total, 1), *((p, -1) for p in parts)]:
            value = published.values.get(key, 0)
            if value is None:
                coefs[key] = coefs.get(key, 0) + sign
            else:
                constant -= sign * value
        equations.append((coefs, constant))
    assert determined(equations) == set()


def test_a_count_is_hidden_with_its_base(
    make_survey: Any, version_id: Any, add_stories: Any, client: Any, token_for: Any
) -> None:
    """Found in review: a visible count under a hidden base pinned the base down (count <= base
    <= stories - excluded), and with it the other valence's base by subtraction."""
    survey, version = make_survey(), version_id()
    day = date(2025, 3, 3)
    add_stories(
        [StorySpec(survey.id, day, "satisfying", ("extra_mile",)) for _ in range(3)], version
    )
    add_stories([StorySpec(survey.id, day, "satisfying") for _ in range(7)], version)
    add_stories(
        [StorySpec(survey.id, day, "dissatisfying", ("complaint",)) for _ in range(50)], version
    )
    report = client.get(
        f"{API}/trends", params={"period": "month"}, headers=token_for("viewer")
    ).json()
    valences = report["periods"][0]["valences"]
    assert valences["satisfying"]["confirmed"] is None
    assert valences["dissatisfying"]["confirmed"] is None
    for row in report["rows"]:
        if row["base"] is None:
            assert row["count"] is None and row["suppressed"], row


def test_the_study_report_gives_no_hidden_count_away(
    make_survey: Any, version_id: Any, add_stories: Any, client: Any, token_for: Any
) -> None:
    survey, version = make_survey(), version_id()
    day = date(2025, 3, 3)
    add_stories(
        [StorySpec(survey.id, day, "satisfying", ("extra_mile",)) for _ in range(3)], version
    )
    add_stories([StorySpec(survey.id, day, "satisfying") for _ in range(20)], version)
    report = client.get(
        f"{API}/study", params={"survey_id": survey.id}, headers=token_for("viewer")
    ).json()
    assert report["incidents"]["included"] is None
    assert report["saturation"]["stories_coded"] is None
    assert all(p["stories_coded"] != 3 for p in report["saturation"]["points"])
    assert all(v["stories"] is None and v["final_codes"] is None for v in report["classification"])
    assert (
        report["respondents"]["invitations_used"] == report["respondents"]["stories_via_invitation"]
    )
