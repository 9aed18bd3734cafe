"""Suppression holds across report shapes: a cell hidden in one period length cannot be
recovered from the reports of another (the issue: June hidden in the month report came back as
the quarter minus April and May). Attacks: that subtraction, then exact linear algebra over
the day, week, month and quarter reports together."""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable
from datetime import date, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.reports.rollups import period_start
from tests.reports.conftest import API, StorySpec
from tests.reports.test_suppression import determined

MEASURES = ("stories", "confirmed", "excluded")
VALENCES = ("satisfying", "dissatisfying")
PERIODS = ("month", "quarter")  # what viewers may read (days and weeks: the team only)


def _get(client: TestClient, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    response = client.get(f"{API}/trends", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _month_total(report: dict[str, Any], period: str) -> int | None:
    row = next(p for p in report["periods"] if p["period"] == period)
    return row["valences"]["dissatisfying"]["stories"]


def test_june_hidden_by_month_is_not_quarter_minus_april_and_may(
    survey_id: int,
    version_id: Callable[..., int],
    add_stories: Callable[..., list[int]],
    client: TestClient,
    token_for: Callable[..., dict[str, str]],
    admin: dict[str, str],
) -> None:
    specs = [
        StorySpec(survey_id, date(2025, month, day), codes=("complaint",))
        for month in (4, 5)
        for day in (1, 2, 3)
        for _ in range(10)
    ]
    specs += [StorySpec(survey_id, date(2025, 6, 5), codes=("complaint",)) for _ in range(3)]
    add_stories(specs, version_id())
    viewer = token_for("viewer")
    months = _get(client, viewer, period="month")
    assert _month_total(months, "2025-04-01") == 30 and _month_total(months, "2025-05-01") == 30
    assert _month_total(months, "2025-06-01") is None  # 3 stories: hidden
    quarter = _get(client, viewer, period="quarter")
    q2 = quarter["periods"][0]
    # Before: 63 - 30 - 30 = 3. Every quarter figure that would give June away is hidden.
    assert q2["valences"]["dissatisfying"]["stories"] is None and q2["stories"] is None
    complaint = next(r for r in quarter["rows"] if r["code"] == "complaint")
    assert complaint["count"] is None and complaint["base"] is None
    # The team's own figures are exact (admins and researchers may ask for them).
    team = _get(client, admin, period="quarter", suppress="false")
    assert team["periods"][0]["stories"] == 63 and team["query"]["suppression"] is False
    assert _get(client, admin, period="quarter")["periods"][0]["stories"] is None
    for params in ({"suppress": "false"}, {"period": "week"}, {"period": "day"}):
        refused = client.get(f"{API}/trends", params=params, headers=viewer)
        assert refused.status_code == 403, params
        assert refused.headers["content-type"].startswith("application/problem+json")
    assert client.get(f"{API}/trends", params={"period": "week"}, headers=admin).is_success


class _System:
    """Unknowns: each day's cells (story measures and code counts per valence). Every figure
    a report publishes is an equation over them; a hidden figure becomes an unknown of its own,
    tied to the days it sums."""

    def __init__(self) -> None:
        self.equations: list[tuple[dict[Hashable, int], int]] = []
        self.hidden: set[Hashable] = set()
        self.values: dict[Hashable, int | None] = {}

    def figure(self, name: Hashable, days: list[Hashable], value: int | None) -> None:
        self.values[name] = value
        coefs: dict[Hashable, int] = dict.fromkeys(days, 1)
        if value is None:
            self.hidden.add(name)
            coefs[name] = coefs.get(name, 0) - 1
            self.equations.append((coefs, 0))
        else:
            self.equations.append((coefs, value))


def _read(system: _System, kind: str, report: dict[str, Any], days: list[date]) -> None:
    def covered(period: str) -> list[date]:
        return [d for d in days if period_start(d, kind).isoformat() == period]  # type: ignore[arg-type]

    for period in report["periods"]:
        p = period["period"]
        span = covered(p)
        for m in MEASURES:
            system.figure(
                (kind, m, p),
                [("s", m, d, v) for d in span for v in VALENCES],
                period[m],
            )
            for v in VALENCES:
                system.figure(
                    (kind, m, p, v), [("s", m, d, v) for d in span], period["valences"][v][m]
                )
                if period["valences"][v]["confirmed"] == 0:
                    for code in report["codes"]:  # no rows: a known 0
                        system.figure((kind, code, p, v), [("c", code, d, v) for d in span], 0)
    for row in report["rows"]:
        span = covered(row["period"])
        system.figure(
            (kind, row["code"], row["period"], row["valence"]),
            [("c", row["code"], d, row["valence"]) for d in span],
            row["count"],
        )


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_no_hidden_figure_follows_from_all_period_lengths_together(
    seed: int,
    survey_id: int,
    version_id: Callable[..., int],
    add_stories: Callable[..., list[int]],
    client: TestClient,
    token_for: Callable[..., dict[str, str]],
) -> None:
    rng = random.Random(seed)
    start = date(2025, 3, 20)
    specs = []
    for offset in range(0, 75, 3):
        day = start + timedelta(days=offset)
        for valence in VALENCES:
            for _ in range(rng.choice((0, 1, 2, 6, 7, 12))):
                status = rng.choices(("coded", "new", "excluded"), (8, 1, 1))[0]
                codes = ("complaint",) if rng.random() < 0.7 else ("extra_mile",)
                specs.append(
                    StorySpec(
                        survey_id, day, valence, codes if status == "coded" else (), status=status
                    )
                )
    add_stories(specs, version_id())
    viewer, admin = token_for("viewer"), token_for("admin")
    reports = {kind: _get(client, viewer, period=kind) for kind in PERIODS}
    days = [
        date.fromisoformat(p["period"])
        for p in _get(client, admin, period="day", suppress="false")["periods"]
    ]
    system, truth = _System(), _System()
    for kind, report in reports.items():
        _read(system, kind, report, days)
        _read(truth, kind, _get(client, admin, period=kind, suppress="false"), days)
    small = {k for k, v in truth.values.items() if v is not None and 0 < v < 5}
    assert small and small <= system.hidden, "every small figure is hidden in every report"
    # A hidden figure that the others determine is a leak when it is small. (One that is not
    # small may follow, e.g. a week of one day equals that day, which the day report shows.)
    found = determined(system.equations) & small
    assert found == set(), sorted(map(str, found))[:5]
