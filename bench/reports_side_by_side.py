"""Old code against new on the same loaded database, alternating: each round runs every
version in its own process (`PYTHONPATH=<dir>`), which times the grouped reports over HTTP
(httpx on the ASGI app, as bench.reports_grouped) and the CPU time of the whole process per
request (the app runs in the client's thread pool, so it is in it), and prints the load
average beside them.

    git archive main | tar -x -C /tmp/main-code
    python -m bench.reports_side_by_side sqlite:///var/bench/reports-scale.db \\
        --version main=/tmp/main-code --version branch=$PWD --rounds 2 --repeat 10

(The child is this file run as a script, with the version's directory first on sys.path.)
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("database_url")
    parser.add_argument("--version", action="append", required=True, help="name=directory")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.database_url, args.repeat)
        return 0
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


if __name__ == "__main__":
    raise SystemExit(main())
