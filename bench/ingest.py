"""Ingest: stories per second through the service's submission paths against the minimal
FastAPI + SQLAlchemy Core endpoint doing one INSERT into the same database, in the same run.

    python -m bench.ingest                                   # SQLite, 1 process
    python -m bench.ingest --database-url postgresql+psycopg://postgres@127.0.0.1:5432/cit_bench \
        --processes 1 3 --concurrency 50 200 --seconds 15

For each database, process count, path (JSON `POST /api/v1/public/surveys/demo/incidents`,
form `POST /s/demo`) and concurrency it serves a fresh database twice, the service
(`cit serve`, with its job worker process scoring every story beside the API; `--no-worker`:
without it, as where `cit worker` runs on another machine) and the baseline
(`bench/minimal_ingest_app.py`, uvicorn with the same number of processes), and loads each with
wrk (`apt-get install wrk`) for `--seconds`, in alternating order. Each request carries a real
story (airline tweets, banking queries and CFPB narratives in turn, `bench/_data.load_stories`)
and its own submission id. It reports requests/s, p50 and p99 latency, errors (socket errors and
any status other than 201/303), the ratio service/baseline, and checks that every acknowledged
story is in the database exactly once.

`--before DIR` also serves the service from another source tree (say, `git archive` of an
earlier commit) as a third server in the same rotation, to compare a change in one run;
`--rounds N` runs every cell N times (the servers' order turned each round).

The PostgreSQL database given is emptied (its public schema dropped): use a scratch database.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from sqlalchemy import create_engine, text

from bench._data import load_stories

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
SECRET = "bench-secret-key-0123456789"
STORY_COUNT = 3000

LUA = r"""
local stories = {}
for line in io.lines(os.getenv("BENCH_STORIES")) do stories[#stories + 1] = line end
local encoded = {}
for line in io.lines(os.getenv("BENCH_STORIES_FORM")) do encoded[#encoded + 1] = line end
local mode = os.getenv("BENCH_MODE")
local cookie = os.getenv("BENCH_COOKIE") or ""
local csrf = os.getenv("BENCH_CSRF") or ""
local counter = 0
local codes = {}

setup = function(thread)
  thread:set("prefix", tostring(math.random(1, 2^30)) .. "-" .. tostring(os.time()))
end

request = function()
  counter = counter + 1
  local story = stories[(counter % #stories) + 1]
  local key = prefix .. "-" .. counter
  if mode == "json" then
    local body = '{"what_happened":' .. story .. ',"valence":"dissatisfying","consent":true,'
      .. '"submission_id":"' .. key .. '"}'
    return wrk.format("POST", "/api/v1/public/surveys/demo/incidents",
      {["Content-Type"] = "application/json"}, body)
  end
  local body = "what_happened=" .. encoded[(counter % #encoded) + 1]
    .. "&valence=dissatisfying&consent=yes"
    .. "&csrf_token=" .. csrf .. "&submission_id=" .. key
  return wrk.format("POST", "/s/demo",
    {["Content-Type"] = "application/x-www-form-urlencoded", ["Cookie"] = cookie}, body)
end

response = function(status, headers, body)
  codes[status] = (codes[status] or 0) + 1
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('RESULT {"requests":%d,"duration_us":%d,"socket_errors":%d,'
    .. '"status_errors":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass
class Run:
    database: str
    processes: int
    path: str
    concurrency: int
    server: str
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    acknowledged: int
    stored: int | None


def _free_port() -> int:
    """A free loopback port: any, or one of `CIT_BENCH_PORTS` ("8810-8819") on a machine whose
    users share out port ranges."""
    first, _, last = os.environ.get("CIT_BENCH_PORTS", "0-0").partition("-")
    for port in range(int(first), int(last or first) + 1):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise RuntimeError(f"no free port in CIT_BENCH_PORTS={os.environ['CIT_BENCH_PORTS']}")


def _wait_up(port: int, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"server on port {port} did not start")


def _reset_database(url: str, workdir: Path, tag: str) -> str:
    """A fresh, migrated database with the demo survey; returns its URL."""
    if url.startswith("sqlite"):
        url = f"sqlite:///{workdir / f'{tag}.db'}"
    else:
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()
    env = _env(url, workdir)
    subprocess.run([VENV_BIN / "cit", "db", "upgrade"], env=env, check=True, capture_output=True)
    subprocess.run([VENV_BIN / "cit", "demo"], env=env, check=True, capture_output=True)
    return url


def _env(url: str, workdir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "CIT_DATABASE_URL": url,
        "CIT_DATA_DIR": str(workdir / "data"),
        "CIT_ENV": "production",
        "CIT_SECRET_KEY": SECRET,
        "CIT_SUBMIT_RATE_LIMIT": "100000000",
        "CIT_LOG_ACCESS": "false",
        "PYTHONUNBUFFERED": "1",
    }


def _start(
    server: str, url: str, processes: int, port: int, workdir: Path, *, worker: bool = True
) -> subprocess.Popen[bytes]:
    env = _env(url, workdir)
    root = ROOT
    if server != "baseline":
        command = [str(VENV_BIN / "cit"), "serve", "--port", str(port)]
        if processes > 1:
            command += ["--workers", str(processes)]
        if not worker:
            command.append("--no-worker")
    else:
        command = [
            str(VENV_BIN / "uvicorn"), "--factory", "bench.minimal_ingest_app:create",
            "--port", str(port), "--log-level", "warning", "--no-access-log",
            "--workers", str(processes),
        ]  # fmt: skip
    if server == "before":  # the service from another source tree (--before)
        root = Path(BEFORE_ROOT[0])
        env["PYTHONPATH"] = str(root)
    log = (workdir / f"{server}-{port}.log").open("wb")
    return subprocess.Popen(
        command, env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


# The source tree served as "before" (--before DIR).
BEFORE_ROOT: list[str] = []


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _count_stored(server: str, url: str) -> int:
    table = "bench_minimal_stories" if server == "baseline" else "incidents"
    engine = create_engine(url)
    with engine.connect() as conn:
        count = int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
        dupes = int(
            conn.execute(
                text(
                    f"SELECT count(*) FROM (SELECT submission_key FROM {table} "
                    "GROUP BY submission_key HAVING count(*) > 1) d"
                )
            ).scalar_one()
        )
    engine.dispose()
    if dupes:
        raise RuntimeError(f"{dupes} submission keys stored twice by the {server}")
    return count


def _form_credentials(port: int) -> tuple[str, str]:
    response = httpx.get(f"http://127.0.0.1:{port}/s/demo")
    cookie = response.cookies.get("cit_csrf") or ""
    match = re.search(r'name="csrf_token" value="([^"]+)"', response.text)
    return f"cit_csrf={cookie}", match.group(1) if match else ""


def _wrk(port: int, mode: str, concurrency: int, seconds: int, lua: Path, stories: Path,
         cookie: str, csrf: str) -> dict[str, Any]:  # fmt: skip
    env = {
        **os.environ,
        "BENCH_STORIES": str(stories),
        "BENCH_STORIES_FORM": str(stories.with_suffix(".form")),
        "BENCH_MODE": mode,
        "BENCH_COOKIE": cookie,
        "BENCH_CSRF": csrf,
    }
    threads = max(1, min(2, concurrency))
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "30s",
         "-s", str(lua), f"http://127.0.0.1:{port}"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT "))
    result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
    return result


def measure(args: argparse.Namespace) -> list[Run]:
    workdir = Path(tempfile.mkdtemp(prefix="cit-ingest-"))
    stories = workdir / "stories.txt"
    texts = [s for s in load_stories(STORY_COUNT) if len(s) <= 5000]
    stories.write_text("\n".join(json.dumps(s) for s in texts) + "\n", encoding="utf-8")
    stories.with_suffix(".form").write_text(
        "\n".join(quote(s, safe="") for s in texts) + "\n", encoding="utf-8"
    )
    lua = workdir / "ingest.lua"
    lua.write_text(LUA, encoding="utf-8")
    runs: list[Run] = []
    database = "postgresql" if args.database_url.startswith("postgresql") else "sqlite"
    servers = ["service", "baseline"] + (["before"] if BEFORE_ROOT else [])
    cells = itertools.product(range(args.rounds), args.processes, args.paths, args.concurrency)
    for cell, (_round, processes, mode, concurrency) in enumerate(cells):
        for server in servers if cell % 2 == 0 else servers[::-1]:
            tag = f"{server}-{processes}-{mode}-{concurrency}-{cell}"
            url = _reset_database(args.database_url, workdir, tag)
            port = _free_port()
            process = _start(server, url, processes, port, workdir,
                             worker=not args.no_worker)  # fmt: skip
            try:
                _wait_up(port, process)
                cookie, csrf = _form_credentials(port) if server != "baseline" else ("", "")
                if mode == "form" and server == "baseline":
                    csrf = "x"
                result = _wrk(port, mode, concurrency, args.seconds, lua, stories,
                              cookie, csrf)  # fmt: skip
            finally:
                _stop(process)
            seconds = result["duration_us"] / 1e6
            errors = result["socket_errors"] + result["status_errors"]
            acknowledged = result["requests"] - result["status_errors"]
            run = Run(
                database, processes, mode, concurrency, server,
                round(result["requests"] / seconds, 1), result["p50_us"] / 1000,
                result["p99_us"] / 1000, errors, acknowledged,
                _count_stored(server, url),
            )  # fmt: skip
            runs.append(run)
            print(json.dumps(asdict(run)), flush=True)
    return runs


def med(rows: list[Run], field: str) -> float:
    return statistics.median(getattr(r, field) for r in rows) if rows else 0.0


def report(runs: list[Run]) -> None:
    """A line per cell and server other than the baseline: medians over the rounds, the ratio
    from each round's own baseline."""
    print()
    print(
        "| database | processes | path | concurrency | server | req/s | baseline req/s | ratio "
        "| p50 / p99 ms | baseline p50 / p99 ms | errors | stored = acknowledged |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    cells: dict[tuple[Any, ...], dict[str, list[Run]]] = {}
    for run in runs:
        key = (run.database, run.processes, run.path, run.concurrency)
        cells.setdefault(key, {}).setdefault(run.server, []).append(run)
    for (db, procs, path, conc), by_server in cells.items():
        bases = by_server.get("baseline", [])
        for server in ("service", "before"):
            ours = by_server.get(server)
            if not ours:
                continue
            ratios = [o.requests_per_s / b.requests_per_s for o, b in zip(ours, bases, strict=True)]
            stored_ok = all(o.stored is not None and o.stored >= o.acknowledged for o in ours)
            print(
                f"| {db} | {procs} | {path} | {conc} | {server} | "
                f"{med(ours, 'requests_per_s'):,.0f} | {med(bases, 'requests_per_s'):,.0f} | "
                f"{statistics.median(ratios) if ratios else 0:.2f} | "
                f"{med(ours, 'p50_ms'):.0f} / {med(ours, 'p99_ms'):.0f} | "
                f"{med(bases, 'p50_ms'):.0f} / {med(bases, 'p99_ms'):.0f} | "
                f"{sum(o.errors for o in ours)} | {'yes' if stored_ok else 'no'} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default="sqlite:///ingest.db")
    parser.add_argument("--processes", type=int, nargs="+", default=[1])
    parser.add_argument("--paths", nargs="+", choices=["json", "form"], default=["json", "form"])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument(
        "--no-worker",
        action="store_true",
        help="serve the service without its job worker (`cit serve --no-worker`: a team that "
        "runs `cit worker` on another machine); no story is suggested during the run",
    )
    parser.add_argument(
        "--before",
        metavar="DIR",
        help="also serve the service from this source tree (say, `git archive` of an earlier "
        "commit), in the same run, as `before`",
    )
    parser.add_argument("--rounds", type=int, default=1, help="run every cell this many times")
    args = parser.parse_args()
    if args.before:
        BEFORE_ROOT.append(str(Path(args.before).resolve()))
    report(measure(args))


if __name__ == "__main__":
    main()
