"""Trends from the rollups: figures by hand, against a GROUP BY over the base tables, periods,
grouping, filters, CSV, ETag and roles."""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Callable
from datetime import date
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.reports.intervals import two_proportion_test, wilson_interval
from app.reports.trends import TrendsQuery, trends_data, trends_report
from tests.reports.conftest import API, StorySpec

JAN, FEB = date(2025, 1, 1), date(2025, 2, 1)


def _days(month: date) -> itertools.cycle[date]:
    return itertools.cycle(month.replace(day=d) for d in (2, 9, 16, 23, 28))


def seed_two_months(survey_id: int, version: int, add: Callable[..., list[int]]) -> None:
    """January: 10 coded dissatisfying (complaint 8, owner_error 5), 2 new, 5 excluded;
    6 coded satisfying (extra_mile 6). February: 20 coded dissatisfying (complaint 10,
    owner_error 5), 5 coded satisfying (extra_mile 5)."""
    jan, feb = _days(JAN), _days(FEB)
    specs = []
    for i in range(10):
        codes = (("complaint",) if i < 8 else ()) + (("owner_error",) if i >= 5 else ())
        specs.append(StorySpec(survey_id, next(jan), "dissatisfying", codes, status="coded"))
    specs += [StorySpec(survey_id, next(jan), "dissatisfying") for _ in range(2)]
    specs += [
        StorySpec(survey_id, next(jan), "dissatisfying", status="excluded", exclusion_reason="x")
        for _ in range(5)
    ]
    specs += [StorySpec(survey_id, next(jan), "satisfying", ("extra_mile",)) for _ in range(6)]
    for i in range(20):
        codes = (("complaint",) if i < 10 else ()) + (("owner_error",) if i >= 15 else ())
        specs.append(StorySpec(survey_id, next(feb), "dissatisfying", codes, status="coded"))
    specs += [StorySpec(survey_id, next(feb), "satisfying", ("extra_mile",)) for _ in range(5)]
    add(specs, version)


def _row(
    report: dict[str, Any], period: date, code: str, valence: str, **group: Any
) -> dict[str, Any]:
    found = [
        r
        for r in report["rows"]
        if r["period"] == period.isoformat()
        and r["code"] == code
        and r["valence"] == valence
        and all(r.get(k) == v for k, v in group.items())
    ]
    assert len(found) == 1, (period, code, valence, group, found)
    return found[0]


@pytest.fixture
def seeded(
    survey_id: int, version_id: Callable[..., int], add_stories: Callable[..., list[int]]
) -> int:
    seed_two_months(survey_id, version_id(), add_stories)
    return survey_id


def test_month_figures_by_hand(
    client: TestClient, token_for: Callable[..., dict[str, str]], seeded: int
) -> None:
    response = client.get(f"{API}/trends", headers=token_for("viewer"))
    assert response.status_code == 200, response.text
    report = response.json()
    assert "not prevalence" in report["note"]
    assert report["codes"] == ["complaint", "extra_mile", "owner_error"]
    assert report["query"]["min_cell"] == 5 and report["query"]["period"] == "month"

    complaint = _row(report, JAN, "complaint", "dissatisfying")
    assert (complaint["count"], complaint["base"], complaint["share"]) == (8, 10, 0.8)
    assert (complaint["ci_low"], complaint["ci_high"]) == pytest.approx(wilson_interval(8, 10))
    assert complaint["suppressed"] is False and complaint["change_from_previous"] is None

    owner = _row(report, JAN, "owner_error", "dissatisfying")
    assert (owner["count"], owner["base"], owner["share"]) == (5, 10, 0.5)
    # The method doc's Wilson test vector: 5/10 -> (0.236593, 0.763407).
    assert (round(owner["ci_low"], 6), round(owner["ci_high"], 6)) == (0.236593, 0.763407)

    zero = _row(report, JAN, "complaint", "satisfying")
    assert (zero["count"], zero["base"], zero["share"], zero["suppressed"]) == (0, 6, 0.0, False)
    assert _row(report, JAN, "extra_mile", "satisfying")["share"] == 1.0

    february = _row(report, FEB, "complaint", "dissatisfying")
    assert (february["count"], february["base"], february["share"]) == (10, 20, 0.5)
    change = february["change_from_previous"]
    expected = two_proportion_test(10, 20, 8, 10)
    assert change["previous_period"] == JAN.isoformat()
    assert change["diff"] == pytest.approx(-0.3)
    assert (change["z"], change["p_value"]) == pytest.approx((expected.z, expected.p_value))

    totals = {(t["period"], t["valence"]): t for t in report["totals"]}
    jan_dis = totals[(JAN.isoformat(), "dissatisfying")]
    assert (jan_dis["stories"], jan_dis["confirmed"], jan_dis["excluded"]) == (17, 10, 5)
    assert jan_dis["confirmed_share"] == pytest.approx(10 / 12)
    periods = {p["period"]: p for p in report["periods"]}
    jan = periods[JAN.isoformat()]
    assert (jan["stories"], jan["confirmed"], jan["excluded"]) == (23, 16, 5)
    assert jan["confirmed_share"] == pytest.approx(16 / 18)
    assert jan["valences"]["satisfying"]["stories"] == 6
    assert periods[FEB.isoformat()]["confirmed_share"] == 1.0
    # 2 periods x 3 codes x 2 valences
    assert len(report["rows"]) == 12


def _base_table_counts(session: Any, group_by: tuple[str, ...]) -> dict[tuple[Any, ...], int]:
    """Month x code x valence (x groups) straight from incidents JOIN incident_codes."""
    postgres = session.get_bind().dialect.name == "postgresql"
    month = (
        "CAST(date_trunc('month', i.submitted_at AT TIME ZONE 'UTC') AS date)"
        if postgres
        else "strftime('%Y-%m-01', i.submitted_at)"
    )
    segment = (
        "i.attributes ->> 'segment'" if postgres else "json_extract(i.attributes, '$.segment')"
    )
    columns = {
        "survey": "i.survey_id",
        "touchpoint": "i.touchpoint",
        "channel": "i.channel",
        "segment": segment,
    }
    groups = "".join(f", {columns[g]}" for g in group_by)
    rows = session.execute(
        text(
            f"SELECT {month}, c.code, i.valence{groups}, COUNT(*) FROM incident_codes c "
            "JOIN incidents i ON i.id = c.incident_id WHERE i.status = 'coded' "
            f"GROUP BY {month}, c.code, i.valence{groups}"
        )
    ).all()
    return {(str(r[0]), *r[1:-1]): int(r[-1]) for r in rows}


GROUPINGS = [
    (),
    ("survey",),
    ("touchpoint",),
    ("channel", "segment"),
    ("touchpoint", "channel", "segment"),
]


@pytest.mark.parametrize("group_by", GROUPINGS)
def test_rollup_report_equals_base_table_group_by(
    group_by: tuple[str, ...],
    make_survey: Callable[..., Any],
    version_id: Callable[..., int],
    add_stories: Callable[..., list[int]],
    db: Callable[[], Any],
) -> None:
    surveys = [make_survey().id, make_survey().id]
    touchpoints, channels, segments = (
        ["Check-in", None, "Gate"],
        ["Phone", None],
        ["business", None, "leisure"],
    )
    combos = itertools.product(
        surveys, touchpoints, channels, segments, ("satisfying", "dissatisfying")
    )
    specs = []
    for index, (survey, touchpoint, channel, segment, valence) in enumerate(combos):
        codes = [
            c for k, c in enumerate(("complaint", "extra_mile", "owner_error")) if (index >> k) & 1
        ]
        month = date(2025, 1 + index % 3, 1 + index % 27)
        specs.append(
            StorySpec(
                survey,
                month,
                valence,
                tuple(codes),
                touchpoint=touchpoint,
                channel=channel,
                segment=segment,
                status="coded",
            )
        )
    add_stories(specs, version_id())
    with db() as session:
        expected = _base_table_counts(session, group_by)
        report = trends_report(session, TrendsQuery(period="month", group_by=group_by), min_cell=1)
    field = {"survey": "survey_id"}
    found = {
        (
            r.period.isoformat(),
            r.code,
            r.valence,
            *(getattr(r, field.get(g, g)) for g in group_by),
        ): r.count
        for r in report.rows
        if r.count
    }
    assert found == expected
    assert all(not r.suppressed for r in report.rows)
    # Bases: every cell's base is its confirmed stories, so shares are count / base.
    for r in report.rows:
        assert r.base and r.share == pytest.approx(r.count / r.base)


@pytest.mark.parametrize(
    "shape",
    [
        {"period": "month"},
        {"period": "month", "group_by": ("touchpoint",)},
        {"period": "quarter", "group_by": ("channel", "segment")},
        {"period": "all", "group_by": ("survey",)},
        {"period": "week", "group_by": ("segment",)},
        {"period": "quarter", "version": True, "bitner_groups": True, "cooccurrence": True},
    ],
)
@pytest.mark.parametrize("suppress", [True, False])
def test_plain_data_is_the_models_dump(
    shape: dict[str, Any],
    suppress: bool,
    seeded: int,
    make_survey: Callable[..., Any],
    version_id: Callable[..., int],
    add_stories: Callable[..., list[int]],
    db: Callable[[], Any],
) -> None:
    """The API writes `trends_data` as JSON without building the models: it must be exactly
    the report's dump, field for field and in order (a field added to a model and not to the
    plain data, or a default filled differently, fails here)."""
    other = make_survey().id
    version = version_id()
    add_stories(
        [
            StorySpec(
                survey,
                date(2025, 1 + i % 5, 1 + i % 27),
                ("satisfying", "dissatisfying")[i % 2],
                (("complaint",), ("extra_mile", "owner_error"), ())[i % 3],
                touchpoint=("Check-in", None, "Gate")[i % 3],
                channel=("Phone", None)[i % 2],
                segment=("business", "leisure", None)[i % 3],
                status="coded",
            )
            for i in range(60)
            for survey in (seeded, other)
        ]
        # A rare code: small counts in every shape.
        + [StorySpec(other, date(2025, 3, 3), "dissatisfying", ("special_request",))] * 2,
        version,
    )
    query = TrendsQuery(
        period=shape["period"],
        group_by=shape.get("group_by", ()),
        codebook_version_id=version if shape.get("version") else None,
        bitner_groups=shape.get("bitner_groups", False),
        cooccurrence=shape.get("cooccurrence", False),
    )
    with db() as session:
        plain = trends_data(session, query, suppress=suppress)
        report = trends_report(session, query, suppress=suppress)
    assert report.rows and (not suppress or any(r.suppressed for r in report.rows))
    assert orjson.dumps(plain) == orjson.dumps(report.model_dump(mode="json"))


def test_periods_day_week_quarter(
    survey_id: int,
    version_id: Callable[..., int],
    add_stories: Callable[..., list[int]],
    db: Callable[[], Any],
) -> None:
    days = [
        date(2024, 12, 30),
        date(2025, 1, 1),
        date(2025, 1, 5),
        date(2025, 1, 6),
        date(2025, 4, 1),
    ]
    add_stories([StorySpec(survey_id, d, codes=("complaint",)) for d in days], version_id())
    expected = {
        "day": {d: 1 for d in days},
        "week": {date(2024, 12, 30): 3, date(2025, 1, 6): 1, date(2025, 3, 31): 1},
        "month": {date(2024, 12, 1): 1, date(2025, 1, 1): 3, date(2025, 4, 1): 1},
        "quarter": {date(2024, 10, 1): 1, date(2025, 1, 1): 3, date(2025, 4, 1): 1},
    }
    with db() as session:
        for period, counts in expected.items():
            report = trends_report(session, TrendsQuery(period=period), min_cell=1)  # type: ignore[arg-type]
            assert {r.period: r.count for r in report.rows} == counts, period
            assert {p.period: p.stories for p in report.periods} == counts, period


def test_filters_survey_dates_and_codebook_version(
    make_survey: Callable[..., Any],
    survey_id: int,
    version_id: Callable[..., int],
    add_stories: Callable[..., list[int]],
    client: TestClient,
    admin: dict[str, str],
) -> None:
    other = make_survey().id
    v1, v2 = version_id(), version_id(number=2)
    add_stories(
        [StorySpec(survey_id, date(2025, 1, 10), codes=("complaint",)) for _ in range(6)], v1
    )
    add_stories(
        [StorySpec(survey_id, date(2025, 3, 10), codes=("complaint",)) for _ in range(7)], v2
    )
    add_stories([StorySpec(other, date(2025, 1, 10), codes=("complaint",)) for _ in range(9)], v1)

    def counts(**params: Any) -> dict[str, int]:
        response = client.get(f"{API}/trends", params=params, headers=admin)
        assert response.status_code == 200, response.text
        return {
            r["period"]: r["count"]
            for r in response.json()["rows"]
            if r["valence"] == "dissatisfying"
        }

    assert counts() == {"2025-01-01": 15, "2025-03-01": 7}
    assert counts(survey_id=survey_id) == {"2025-01-01": 6, "2025-03-01": 7}
    # from/to are snapped to whole periods: 2025-01-20 covers all of January.
    assert counts(**{"from": "2025-01-20", "to": "2025-02-01"}) == {"2025-01-01": 15}
    snapped = client.get(
        f"{API}/trends", params={"from": "2025-01-20", "to": "2025-02-01"}, headers=admin
    ).json()
    assert (
        snapped["query"]["date_from"] == "2025-01-01"
        and snapped["query"]["date_to"] == "2025-02-28"
    )
    # Only version 2's codes count; January's stories stay in the base as not carrying them.
    by_version = client.get(
        f"{API}/trends", params={"codebook_version_id": v2}, headers=admin
    ).json()
    jan = [r for r in by_version["rows"] if r["period"] == "2025-01-01"]
    assert jan and all(r["count"] == 0 and r["base"] == 15 for r in jan)
    assert counts(codebook_version_id=v2) == {"2025-01-01": 0, "2025-03-01": 7}


def test_group_by_accepts_repeats_and_comma_lists(
    seeded: int, client: TestClient, admin: dict[str, str]
) -> None:
    one = client.get(f"{API}/trends?group_by=survey&group_by=touchpoint", headers=admin)
    two = client.get(f"{API}/trends?group_by=survey,touchpoint", headers=admin)
    assert one.status_code == two.status_code == 200
    assert one.json() == two.json()
    assert one.json()["query"]["group_by"] == ["survey", "touchpoint"]
    row = one.json()["rows"][0]
    assert row["survey_id"] == seeded and row["touchpoint"] is None  # not given
    assert client.get(f"{API}/trends?group_by=colour", headers=admin).status_code == 400


def test_csv_by_accept_header_and_format(
    seeded: int, client: TestClient, admin: dict[str, str]
) -> None:
    by_accept = client.get(f"{API}/trends", headers={**admin, "Accept": "text/csv"})
    by_param = client.get(f"{API}/trends?format=csv", headers=admin)
    assert by_accept.status_code == by_param.status_code == 200
    assert by_accept.headers["content-type"].startswith("text/csv")
    assert by_accept.text == by_param.text
    assert "not prevalence" in by_accept.headers["x-report-note"]
    rows = list(csv.DictReader(io.StringIO(by_accept.text)))
    assert len(rows) == 12
    assert list(rows[0]) == [
        "period",
        "code",
        "valence",
        "count",
        "base",
        "share",
        "ci_low",
        "ci_high",
        "suppressed",
        "change_diff",
        "change_z",
        "change_p_value",
    ]
    first = next(
        r
        for r in rows
        if r["period"] == "2025-01-01"
        and r["code"] == "complaint"
        and r["valence"] == "dissatisfying"
    )
    assert (first["count"], first["base"], first["share"], first["suppressed"]) == (
        "8",
        "10",
        "0.8",
        "false",
    )
    grouped = client.get(f"{API}/trends?format=csv&group_by=channel", headers=admin).text
    assert grouped.splitlines()[0].startswith("period,code,valence,channel,count")
    json_preferred = client.get(
        f"{API}/trends", headers={**admin, "Accept": "text/csv;q=0.5, application/json"}
    )
    assert json_preferred.headers["content-type"].startswith("application/json")


def test_etag_and_cache_control(
    seeded: int,
    client: TestClient,
    token_for: Callable[..., dict[str, str]],
    add_stories: Callable[..., list[int]],
    version_id: Callable[..., int],
) -> None:
    viewer = token_for("viewer")
    first = client.get(f"{API}/trends", headers=viewer)
    etag = first.headers["etag"]
    assert first.headers["cache-control"].startswith("private, max-age=")
    again = client.get(f"{API}/trends", headers={**viewer, "If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag
    listed = client.get(f"{API}/trends", headers={**viewer, "If-None-Match": f'"other", W/{etag}'})
    assert listed.status_code == 304
    csv_version = client.get(f"{API}/trends?format=csv", headers={**viewer, "If-None-Match": etag})
    assert csv_version.status_code == 200 and csv_version.headers["etag"] != etag

    # One more confirmed story: the very next request sees it (no batch), with a new ETag. (On
    # a day with other stories: alone on its day, the day report would hide that day's total of
    # 1, and the month's total would then be hidden too, or it would give that 1 away.)
    add_stories([StorySpec(seeded, date(2025, 2, 2), "satisfying", ("extra_mile",))], version_id())
    fresh = client.get(f"{API}/trends", headers={**viewer, "If-None-Match": etag})
    assert fresh.status_code == 200 and fresh.headers["etag"] != etag
    assert _row(fresh.json(), FEB, "extra_mile", "satisfying")["count"] == 6
    for path in ("/surveys", f"/study?survey_id={seeded}"):
        response = client.get(API + path, headers=viewer)
        assert response.headers["cache-control"].startswith("private")
        assert (
            client.get(
                API + path, headers={**viewer, "If-None-Match": response.headers["etag"]}
            ).status_code
            == 304
        )


@pytest.mark.parametrize("role", ["admin", "researcher", "viewer"])
def test_every_role_may_read_reports(
    role: str, seeded: int, client: TestClient, token_for: Callable[..., dict[str, str]]
) -> None:
    headers = token_for(role)
    assert client.get(f"{API}/trends", headers=headers).status_code == 200
    assert client.get(f"{API}/study?survey_id={seeded}", headers=headers).status_code == 200
    surveys = client.get(f"{API}/surveys", headers=headers)
    assert surveys.status_code == 200 and [s["id"] for s in surveys.json()] == [seeded]


def test_errors_are_problems(client: TestClient, admin: dict[str, str]) -> None:
    assert client.get(f"{API}/trends").status_code == 401
    assert client.get(f"{API}/study?survey_id=1").status_code == 401
    bad_token = client.get(f"{API}/trends", headers={"Authorization": "Bearer cit_nope"})
    assert bad_token.status_code == 401
    for params, status in (
        ({"period": "year"}, 422),
        ({"group_by": "colour"}, 400),
        ({"from": "2025-03-01", "to": "2025-01-01"}, 400),
        ({"survey_id": 999}, 404),
        ({"format": "xml"}, 422),
    ):
        response = client.get(f"{API}/trends", params=params, headers=admin)
        assert response.status_code == status, (params, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    assert client.get(f"{API}/study?survey_id=999", headers=admin).status_code == 404


def test_empty_report(client: TestClient, admin: dict[str, str]) -> None:
    report = client.get(f"{API}/trends", headers=admin).json()
    assert report["rows"] == [] and report["periods"] == [] and report["codes"] == []


def test_too_many_rows_are_refused(
    seeded: int, client: TestClient, admin: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.reports import trends

    monkeypatch.setattr(trends, "MAX_ROWS", 20)
    assert client.get(f"{API}/trends?period=month", headers=admin).status_code == 200
    refused = client.get(f"{API}/trends?period=day", headers=admin)
    assert refused.status_code == 400 and "more than 20 rows" in refused.json()["detail"]
