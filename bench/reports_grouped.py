"""Grouped reports and cross-tabs on a database that bench.reports_scale has loaded (it is not
reloaded here), over HTTP (httpx on the ASGI app) and through the service function, each read
two ways in the same run: from the monthly rollups (what the service does for month, quarter
and whole-range reports) and from the daily ones (`rollups.MONTHLY_READS = False`, the path
before issue 12's monthly tables), beside the raw GROUP BY over the base tables. Every
response of the two paths is compared, byte for byte.

    python -m bench.reports_grouped sqlite:///var/bench/reports-scale.db
    python -m bench.reports_grouped postgresql+psycopg://postgres@127.0.0.1:5432/cit_bench

`--repeat` runs per figure on the monthly path (default 20), `--daily-repeat` on the daily
path (default 5), `--raw-repeat` of each raw GROUP BY (default 2). A database loaded before
migration 1203 needs `alembic upgrade head` first (which fills the monthly tables).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from app.auth import create_token
from app.config import Settings
from app.db import create_db_engine, make_sessionmaker, session_scope
from app.main import create_app
from app.models.reports import (
    ReportCodeDayDetail,
    ReportCodeMonthBy,
    ReportCodeMonthDetail,
    ReportStoryDayBy,
    ReportStoryMonth,
    ReportStoryMonthBy,
)
from app.reports import rollups
from app.reports.trends import TrendsQuery, _fetch, trends_report
from bench.reports_scale import raw_group_by, raw_grouped

ROOT = Path(__file__).resolve().parent.parent
TARGET_MS = 100.0
TRENDS = "/api/v1/reports/trends"
CROSSTAB = "/api/v1/reports/crosstab"


def timed(run: Callable[[], Any], repeat: int) -> dict[str, float]:
    run()  # warm-up: caches, query plans
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        run()
        samples.append((time.perf_counter() - began) * 1000)
    samples.sort()
    p95 = samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))]
    return {"p50": statistics.median(samples), "p95": p95, "n": len(samples)}


@contextmanager
def daily_reads() -> Iterator[None]:
    rollups.MONTHLY_READS = False
    try:
        yield
    finally:
        rollups.MONTHLY_READS = True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("database_url")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--daily-repeat", type=int, default=5)
    parser.add_argument("--raw-repeat", type=int, default=2)
    args = parser.parse_args(argv)
    url = args.database_url
    backend = make_url(url).get_backend_name()
    engine = create_db_engine(url)
    sessions = make_sessionmaker(engine)
    with sessions() as session:
        sizes = {
            t.__tablename__: session.scalar(select(func.count()).select_from(t))
            for t in (
                ReportStoryDayBy,
                ReportStoryMonth,
                ReportStoryMonthBy,
                ReportCodeMonthBy,
                ReportCodeDayDetail,
                ReportCodeMonthDetail,
            )
        }
    print(f"# Grouped reports: {backend}")
    print("rollup rows: " + ", ".join(f"{k} {v:,}" for k, v in sizes.items()))

    app = create_app(Settings(database_url=url, data_dir=ROOT / "var" / "bench"))
    with session_scope(app.state.sessionmaker) as session:
        _, viewer_token = create_token(session, name="bench-viewer", role="viewer")
        _, admin_token = create_token(session, name="bench-admin", role="admin")
    viewer = {"Authorization": f"Bearer {viewer_token}"}
    admin = {"Authorization": f"Bearer {admin_token}"}
    cases: list[tuple[str, str, dict[str, str]]] = [
        ("month, ungrouped, viewer", f"{TRENDS}?period=month", viewer),
        ("quarter, ungrouped, viewer", f"{TRENDS}?period=quarter", viewer),
    ]
    for dimension in rollups.DIMENSIONS:
        path = f"{TRENDS}?period=month&group_by={dimension}"
        cases += [
            (f"month by {dimension}, viewer (suppressed)", path, viewer),
            (f"month by {dimension}, admin `suppress=false`", f"{path}&suppress=false", admin),
        ]
    for dimension in rollups.DIMENSIONS:
        path = f"{CROSSTAB}?by={dimension}&period=quarter"
        cases.append((f"crosstab code x {dimension} (quarters), viewer", path, viewer))
    cases.append(
        (
            "crosstab code x touchpoint (quarters), admin `suppress=false`",
            f"{CROSSTAB}?by=touchpoint&period=quarter&suppress=false",
            admin,
        )
    )
    # Two or more dimensions (report_*_months_detail, migration 1204).
    for dims, period in (("touchpoint,channel", "month"), ("channel,segment", "quarter")):
        path = f"{TRENDS}?period={period}&group_by={dims}"
        cases += [
            (f"{period} by {dims.replace(',', ' x ')}, viewer (suppressed)", path, viewer),
            (
                f"{period} by {dims.replace(',', ' x ')}, admin `suppress=false`",
                f"{path}&suppress=false",
                admin,
            ),
        ]
    cases.append(
        (
            "quarter by touchpoint x channel x segment, admin `suppress=false`",
            f"{TRENDS}?period=quarter&group_by=touchpoint,channel,segment&suppress=false",
            admin,
        )
    )

    rows: list[tuple[str, dict[str, float] | None, dict[str, float] | None]] = []
    with TestClient(app) as client:

        def getter(path: str, who: dict[str, str]) -> Callable[[], bytes]:
            def get() -> bytes:
                response = client.get(path, headers=who)
                assert response.status_code == 200, response.text
                return response.content

            return get

        for name, path, who in cases:
            get = getter(path, who)
            monthly_body = get()
            with daily_reads():
                daily_body = get()
            assert monthly_body == daily_body, f"{name}: the monthly and daily reads differ"
            monthly = timed(get, args.repeat)
            with daily_reads():
                daily = timed(get, args.daily_repeat)
            rows.append((f"API, {name}", monthly, daily))
            print(f"  {name}: {monthly['p50']:.0f} ms (daily {daily['p50']:.0f} ms)", flush=True)

    with sessions() as session:
        for name, query, suppress in (
            ("month by touchpoint, suppressed", TrendsQuery("month", ("touchpoint",)), True),
            ("quarter by touchpoint, suppressed", TrendsQuery("quarter", ("touchpoint",)), True),
        ):

            def service(q: TrendsQuery = query, s: bool = suppress) -> Any:
                return trends_report(session, q, suppress=s)

            monthly = timed(service, args.repeat)
            with daily_reads():
                daily = timed(service, args.daily_repeat)
            rows.append((f"service (`trends_report`), {name}", monthly, daily))

    # Where a report's time goes (monthly path): the two GROUP BYs and their rows into dicts
    # (`_fetch`), the whole service function (fetch, suppression, intervals, changes, pydantic
    # rows), and the JSON the router sends.
    split: list[tuple[str, float, float, float, int]] = []
    with sessions() as session:
        for name, query, suppress in (
            ("month by touchpoint, exact", TrendsQuery("month", ("touchpoint",)), False),
            ("month by touchpoint, suppressed", TrendsQuery("month", ("touchpoint",)), True),
            ("quarter by channel, suppressed", TrendsQuery("quarter", ("channel",)), True),
            ("month, ungrouped, suppressed", TrendsQuery("month"), True),
        ):
            report = trends_report(session, query, suppress=suppress)
            fetch = timed(lambda q=query: _fetch(session, q), args.daily_repeat)
            whole = timed(
                lambda q=query, s=suppress: trends_report(session, q, suppress=s),
                args.daily_repeat,
            )
            dump = timed(lambda r=report: orjson.dumps(r.model_dump(mode="json")), args.repeat)
            split.append((name, fetch["p50"], whole["p50"], dump["p50"], len(report.rows)))

    rows.append(
        (
            "raw GROUP BY month x code x valence (base tables)",
            timed(lambda: raw_group_by(engine), args.raw_repeat),
            None,
        )
    )
    for dimension in rollups.DIMENSIONS:
        rows.append(
            (
                f"raw GROUP BY month x code x valence x {dimension} (base tables)",
                timed(lambda d=dimension: raw_grouped(engine, d), args.raw_repeat),
                None,
            )
        )

    print()
    print(
        "| report | monthly rollups p50 ms | p95 ms | runs | daily rollups p50 ms | runs "
        f"| p50 <= {TARGET_MS:.0f} ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, monthly, daily in rows:
        assert monthly is not None
        old = f"{daily['p50']:.0f} | {daily['n']}" if daily else "- | -"
        verdict = ("met" if monthly["p50"] <= TARGET_MS else "MISSED") if daily else ""
        print(
            f"| {name} | {monthly['p50']:.0f} | {monthly['p95']:.0f} | {monthly['n']} | {old} "
            f"| {verdict} |"
        )
    print()
    print(
        "| where the time goes (monthly path, p50 ms) | SQL + rows (`_fetch`) | service "
        "| JSON | rows |"
    )
    print("|---|---:|---:|---:|---:|")
    for name, fetch_ms, whole_ms, dump_ms, count in split:
        print(f"| {name} | {fetch_ms:.0f} | {whole_ms:.0f} | {dump_ms:.0f} | {count:,} |")
    engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
