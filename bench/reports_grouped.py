"""Trends reports, suppressed and exact, ungrouped and grouped, through the service function on a
database that bench.reports_scale has loaded (it is not reloaded here):

    python -m bench.reports_grouped sqlite:///var/bench/reports-scale.db
    python -m bench.reports_grouped postgresql+psycopg://postgres@127.0.0.1:5432/cit_bench
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import create_engine

from app.db import make_sessionmaker
from app.reports.trends import TrendsQuery, trends_report

CASES: tuple[tuple[str, TrendsQuery, bool], ...] = (
    ("month, suppressed", TrendsQuery(period="month"), True),
    ("month, exact", TrendsQuery(period="month"), False),
    ("quarter, suppressed", TrendsQuery(period="quarter"), True),
    (
        "month by touchpoint, suppressed",
        TrendsQuery(period="month", group_by=("touchpoint",)),
        True,
    ),
    ("month by touchpoint, exact", TrendsQuery(period="month", group_by=("touchpoint",)), False),
    ("month by channel, suppressed", TrendsQuery(period="month", group_by=("channel",)), True),
    ("month by segment, suppressed", TrendsQuery(period="month", group_by=("segment",)), True),
    (
        "quarter by touchpoint, suppressed (the cross-tab)",
        TrendsQuery(period="quarter", group_by=("touchpoint",)),
        True,
    ),
)


def timed(run: Callable[[], Any], repeat: int = 5) -> tuple[float, float]:
    run()  # warm-up
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        run()
        samples.append((time.perf_counter() - began) * 1000)
    return statistics.median(samples), max(samples)


def main(argv: list[str] | None = None) -> int:
    url = (argv or sys.argv[1:])[0]
    sessions = make_sessionmaker(create_engine(url))
    print("| report | p50 ms | max ms |")
    print("|---|---:|---:|")
    with sessions() as session:
        for name, query, suppress in CASES:
            p50, worst = timed(lambda q=query, s=suppress: trends_report(session, q, suppress=s))
            print(f"| {name} | {p50:.0f} | {worst:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
