"""Old code against new on the same loaded database, alternating: each round runs every
version in its own process (`PYTHONPATH=<dir>`), which times the grouped reports over HTTP
(httpx on the ASGI app, as bench.reports_grouped) and the CPU time of the whole process per
request (the app runs in the client's thread pool, so it is in it), and prints the load
average beside them.

    git archive main | tar -x -C /tmp/main-code
    python -m bench.reports_side_by_side sqlite:///var/bench/reports-scale.db \\
        --version main=/tmp/main-code --version branch=$PWD --rounds 2 --repeat 10

(The child is this file run as a script, with the version's directory first on sys.path.)

`--cache` (a version with app.reports.cache) times each report three ways instead, in one
process: cold (the report's inputs just changed: the generation raised in a committed
transaction of its own, untimed, before every timed request, so each is computed), warm (the
same request again: a state read and a lookup) and warm with If-None-Match (304), p50 and p99
of wall time (and median CPU), beside the raw GROUP BY of the same grouping over the base
tables (`--raw-repeat` runs):

    python -m bench.reports_side_by_side <url> --version branch=$PWD --cache \
        --repeat 15 --warm-repeat 200 --raw-repeat 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CASES = (
    ("month by touchpoint, viewer", "/trends?period=month&group_by=touchpoint", "viewer"),
    ("crosstab code x channel (quarters), viewer", "/crosstab?by=channel&period=quarter", "viewer"),
    (
        "month by touchpoint x channel, viewer",
        "/trends?period=month&group_by=touchpoint,channel",
        "viewer",
    ),
    (
        "month by touchpoint x channel, admin exact",
        "/trends?period=month&group_by=touchpoint,channel&suppress=false",
        "admin",
    ),
    (
        "quarter by channel x segment, viewer",
        "/trends?period=quarter&group_by=channel,segment",
        "viewer",
    ),
    (
        "quarter by channel x segment, admin exact",
        "/trends?period=quarter&group_by=channel,segment&suppress=false",
        "admin",
    ),
    (
        "quarter by touchpoint x channel x segment, admin exact",
        "/trends?period=quarter&group_by=touchpoint,channel,segment&suppress=false",
        "admin",
    ),
)


def child(url: str, repeat: int) -> None:
    from fastapi.testclient import TestClient

    from app.auth import create_token
    from app.config import Settings
    from app.db import session_scope
    from app.main import create_app

    app = create_app(Settings(database_url=url, data_dir=Path("/tmp")))
    with session_scope(app.state.sessionmaker) as session:
        tokens = {
            role: {
                "Authorization": f"Bearer {create_token(session, name=f'sbs-{role}', role=role)[1]}"
            }
            for role in ("viewer", "admin")
        }
    results = {}
    with TestClient(app) as client:
        for name, path, role in CASES:
            url_path = "/api/v1/reports" + path
            assert client.get(url_path, headers=tokens[role]).status_code == 200
            walls, cpus = [], []
            for _ in range(repeat):
                began, cpu = time.perf_counter(), time.process_time()
                response = client.get(url_path, headers=tokens[role])
                walls.append((time.perf_counter() - began) * 1000)
                cpus.append((time.process_time() - cpu) * 1000)
                assert response.status_code == 200
            results[name] = (statistics.median(walls), statistics.median(cpus))
    print(json.dumps(results))


def _percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def _raw_sql(dialect: str, period: str, dimensions: list[str]) -> str:
    """Period x code x valence x dimensions straight from incidents JOIN incident_codes."""
    unit = {"month": "month", "quarter": "quarter"}[period]
    if dialect == "postgresql":
        start = f"CAST(date_trunc('{unit}', i.submitted_at AT TIME ZONE 'UTC') AS date)"
        segment = "i.attributes ->> 'segment'"
    else:
        start = (
            "strftime('%Y-%m-01', i.submitted_at)"
            if unit == "month"
            else "printf('%s-%02d-01', strftime('%Y', i.submitted_at), "
            "(CAST(strftime('%m', i.submitted_at) AS INTEGER) - 1) / 3 * 3 + 1)"
        )
        segment = "json_extract(i.attributes, '$.segment')"
    columns = [segment if d == "segment" else f"i.{d}" for d in dimensions]
    keys = ", ".join([start, "c.code", "i.valence", *columns])
    return (
        f"SELECT {keys}, COUNT(*) FROM incident_codes c JOIN incidents i "
        f"ON i.id = c.incident_id WHERE i.status = 'coded' GROUP BY {keys}"
    )


def cache_child(url: str, repeat: int, warm_repeat: int, raw_repeat: int) -> None:
    """Cold, warm and 304 timings per case through the report cache, and the raw GROUP BY."""
    from urllib.parse import parse_qs, urlsplit

    from fastapi.testclient import TestClient
    from sqlalchemy import text

    from app.auth import create_token
    from app.config import Settings
    from app.db import session_scope
    from app.main import create_app
    from app.reports import cache as report_cache

    app = create_app(Settings(database_url=url, data_dir=Path("/tmp")))
    assert app.state.report_cache.enabled
    with session_scope(app.state.sessionmaker) as session:
        tokens = {
            role: {
                "Authorization": f"Bearer {create_token(session, name=f'sbs-{role}', role=role)[1]}"
            }
            for role in ("viewer", "admin")
        }

    def inputs_changed() -> None:
        with session_scope(app.state.sessionmaker) as session:
            report_cache.bump(session)

    def timed(request: Any, n: int, before: Any = None) -> dict[str, float]:
        walls, cpus = [], []
        for _ in range(n):
            if before is not None:
                before()
            began, cpu = time.perf_counter(), time.process_time()
            request()
            walls.append((time.perf_counter() - began) * 1000)
            cpus.append((time.process_time() - cpu) * 1000)
        return {
            "p50": statistics.median(walls),
            "p99": _percentile(walls, 0.99),
            "cpu": statistics.median(cpus),
            "n": n,
        }

    results: dict[str, Any] = {}
    raw_done: dict[tuple[str, tuple[str, ...]], dict[str, float]] = {}
    engine = app.state.engine
    with TestClient(app) as client:
        for name, path, role in CASES:
            url_path = "/api/v1/reports" + path
            headers = tokens[role]

            def get(h: dict[str, str] = headers, u: str = url_path, status: int = 200) -> Any:
                response = client.get(u, headers=h)
                assert response.status_code == status, response.text
                return response

            get()  # the process's first request of this shape (imports, plans)
            cold = timed(get, repeat, before=inputs_changed)
            etag = get().headers["etag"]
            warm = timed(get, warm_repeat)
            tagged = {**headers, "If-None-Match": etag}
            not_modified = timed(lambda h=tagged: get(h, status=304), warm_repeat)
            # The same grouping straight from the base tables.
            query = parse_qs(urlsplit(path).query)
            period = query.get("period", ["quarter"])[0]
            dims = tuple(
                query.get("by", []) or [g for v in query.get("group_by", []) for g in v.split(",")]
            )
            if (period, dims) not in raw_done:
                sql = text(_raw_sql(engine.dialect.name, period, list(dims)))

                def raw(statement: Any = sql) -> None:
                    with engine.connect() as conn:
                        conn.execute(statement).all()

                raw_done[(period, dims)] = timed(raw, raw_repeat)
            results[name] = {
                "cold": cold,
                "warm": warm,
                "304": not_modified,
                "raw": raw_done[(period, dims)],
                "cache_entries": len(app.state.report_cache),
            }
    print(json.dumps(results))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("database_url")
    parser.add_argument("--version", action="append", required=True, help="name=directory")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cache", action="store_true", help="cold / warm / 304 per report")
    parser.add_argument("--warm-repeat", type=int, default=200)
    parser.add_argument("--raw-repeat", type=int, default=1)
    args = parser.parse_args()
    if args.child:
        if args.cache:
            cache_child(args.database_url, args.repeat, args.warm_repeat, args.raw_repeat)
        else:
            child(args.database_url, args.repeat)
        return 0
    if args.cache:
        return cache_rounds(args)
    versions = [v.split("=", 1) for v in args.version]
    table: dict[str, dict[str, list[str]]] = {}
    for round_ in range(args.rounds):
        order = versions if round_ % 2 == 0 else versions[::-1]
        for name, directory in order:
            load = os.getloadavg()[0]
            output = subprocess.run(
                [sys.executable, __file__, args.database_url, "--child", "--version", "x=x",
                 "--repeat", str(args.repeat)],
                env={**os.environ, "PYTHONPATH": directory},
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            load = max(load, os.getloadavg()[0])
            for case, (wall, cpu) in json.loads(output.strip().splitlines()[-1]).items():
                table.setdefault(case, {}).setdefault(name, []).append(f"{wall:.0f} ({cpu:.0f})")
            print(f"# round {round_ + 1}, {name}: load average up to {load:.1f}", flush=True)
    names = [name for name, _ in versions]
    print("| report: HTTP p50 ms (CPU ms), round 1 / round 2 ... | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for case, by_version in table.items():
        print(f"| {case} | " + " | ".join(" / ".join(by_version[n]) for n in names) + " |")
    return 0


def cache_rounds(args: argparse.Namespace) -> int:
    """Each version's cache child per round (alternating), one table per round."""
    versions = [v.split("=", 1) for v in args.version]
    for round_ in range(args.rounds):
        order = versions if round_ % 2 == 0 else versions[::-1]
        for name, directory in order:
            load = os.getloadavg()[0]
            output = subprocess.run(
                [sys.executable, __file__, args.database_url, "--child", "--cache",
                 "--version", "x=x", "--repeat", str(args.repeat),
                 "--warm-repeat", str(args.warm_repeat), "--raw-repeat", str(args.raw_repeat)],
                env={**os.environ, "PYTHONPATH": directory},
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            load = max(load, os.getloadavg()[0])
            print(f"# round {round_ + 1}, {name}: load average up to {load:.1f}", flush=True)
            print(
                "| report (HTTP ms: p50 / p99, median CPU) | cold: inputs changed | warm: "
                "repeated | warm, If-None-Match (304) | raw GROUP BY (base tables) | "
                "warm p50 <= 100 ms |"
            )
            print("|---|---:|---:|---:|---:|---|")
            for case, r in json.loads(output.strip().splitlines()[-1]).items():
                cells = [
                    f"{r[k]['p50']:.1f} / {r[k]['p99']:.1f} ({r[k]['cpu']:.1f})"
                    for k in ("cold", "warm", "304")
                ]
                raw = f"{r['raw']['p50']:.0f}"
                verdict = "met" if r["warm"]["p50"] <= 100 else "MISSED"
                cold = "met" if r["cold"]["p50"] <= 100 else "missed"
                print(f"| {case} | {' | '.join(cells)} | {raw} | {verdict} (cold: {cold}) |")
            n = r["cold"]["n"], r["warm"]["n"], r["raw"]["n"]
            print(f"(runs: cold {n[0]}, warm {n[1]} each, raw {n[2]})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
