"""Coding throughput: `POST /api/v1/review/next` + `PUT /api/v1/incidents/{id}/codings/me`
(one coding) against a minimal FastAPI + Core endpoint pair doing the same number of reads and
writes on the same database, in the same run, sequential and with 8 coders at once.

    python -m bench.review_throughput                       # SQLite, 1,000,000 stories
    python -m bench.review_throughput --stories 200000 \
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/cit_bench

The database (built once and kept; `--reset` rebuilds it; a PostgreSQL database given is
emptied first: use a scratch one) holds `--stories` stories of one survey over two years, 90 %
already coded (with a final code), 10 % waiting to be coded, each with stored suggestions: the
queue must find the next story among a million without reading them all. The service runs as
`cit serve --no-worker`; each coder has a researcher token. The baseline
(`bench/minimal_review_app.py`) hands out the oldest waiting story with one SELECT ... LIMIT 1
(FOR UPDATE SKIP LOCKED on PostgreSQL) and one INSERT of a lease row, and saves a coding with
one INSERT and one UPDATE.
Reported: codings per second, p50/p99 of each call, errors (all rounds), the server's CPU per
coding; with `--rounds N`, the median of each figure over N rounds, the servers' order reversed
in every other round.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

from app import migrate
from app.auth import create_token
from app.codebooks.service import ensure_default_codebook
from app.db import create_db_engine, make_sessionmaker, session_scope
from bench.ingest import _free_port, _wait_up

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
SECRET = "bench-secret-key-0123456789"
DEFAULT_URL = f"sqlite:///{ROOT / 'var' / 'bench' / 'review-throughput.db'}"
START = datetime(2024, 1, 1, tzinfo=UTC)
CHUNK = 50_000


def _stamp(moment: datetime, sqlite: bool) -> Any:
    return moment.replace(tzinfo=None).isoformat(" ", "microseconds") if sqlite else moment


def build(url: str, n: int) -> None:
    if url.startswith("postgresql"):
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()
    migrate.upgrade(url)
    engine = create_db_engine(url)
    sqlite = engine.dialect.name == "sqlite"
    with session_scope(make_sessionmaker(engine)) as session:
        version = ensure_default_codebook(session)
        version_id, codebook_id = version.id, version.codebook_id
    now = _stamp(datetime.now(UTC), sqlite)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO surveys (slug, title, introduction, language, questions, choices, "
                "status, created_at, updated_at, version, double_coding_share, review_order, "
                "codebook_id) VALUES ('bench', 'Bench', '', 'en', '{}', '{}', 'open', :now, :now, "
                "1, 0, 'oldest', :codebook)"
            ),
            {"now": now, "codebook": codebook_id},
        )
        survey_id = conn.execute(text("SELECT id FROM surveys WHERE slug = 'bench'")).scalar_one()
    rng = random.Random(5)
    raw = engine.raw_connection()
    cursor = raw.cursor()
    started = time.perf_counter()
    p = "?" if sqlite else "%s"
    incident_sql = (
        "INSERT INTO incidents (id, survey_id, submission_key, what_happened, valence, language, "
        "attributes, redacted, redaction_spans, submitted_at, status, finalized_at, version, "
        f"coders_required) VALUES ({', '.join([p] * 14)})"
    )
    code_sql = (
        "INSERT INTO incident_codes (incident_id, code, codebook_version_id, source, "
        f"confirmed_by, confirmed_at) VALUES ({', '.join([p] * 6)})"
    )
    suggestion_sql = (
        "INSERT INTO suggestions (incident_id, items, certainty, codebook_version_id, "
        f"model_id, created_at) VALUES ({', '.join([p] * 6)})"
    )
    items = json.dumps([{"code": "complaint", "score": 0.75, "suggested": True,
                         "source": "rules", "evidence": []}])  # fmt: skip
    if sqlite:
        cursor.execute("BEGIN IMMEDIATE")
    span = 730 * 86_400
    for start in range(1, n + 1, CHUNK):
        rows, codes, suggestions = [], [], []
        for story in range(start, min(start + CHUNK, n + 1)):
            submitted = START + timedelta(seconds=rng.randrange(span))
            coded = rng.random() < 0.9
            stamp = _stamp(submitted, sqlite)
            redacted = json.dumps({"what_happened": f"Story {story}: the flight was late."})
            rows.append((story, survey_id, f"bench-{story}", f"Story {story}: the flight was "
                         "late.", "dissatisfying", "en", "{}", redacted, "{}", stamp,
                         "coded" if coded else "new", stamp if coded else None, 1,
                         1 if coded else None))  # fmt: skip
            if coded:
                codes.append((story, "complaint", version_id, "review", "bench", stamp))
            suggestions.append((story, items, rng.random(), version_id, None, stamp))
        cursor.executemany(incident_sql, rows)
        cursor.executemany(code_sql, codes)
        cursor.executemany(suggestion_sql, suggestions)
        if not sqlite:
            raw.commit()
    if sqlite:
        cursor.execute("COMMIT")
    else:
        cursor.execute("SELECT setval('incidents_id_seq', (SELECT max(id) FROM incidents))")
        raw.commit()
    raw.close()
    with session_scope(make_sessionmaker(engine)) as session:
        from app.reports import rollups

        rollups.fold(session)
    if not sqlite:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    else:
        with engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
    engine.dispose()
    print(f"built {n:,} stories in {time.perf_counter() - started:.0f} s", flush=True)


def _tokens(url: str, n: int) -> list[str]:
    engine = create_db_engine(url)
    tokens = []
    with session_scope(make_sessionmaker(engine)) as session:
        for _ in range(n):
            name = f"coder-{random.randrange(10**9)}"
            tokens.append(create_token(session, name=name, role="researcher")[1])
    engine.dispose()
    return tokens


def _serve(server: str, url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CIT_DATABASE_URL": url, "CIT_ENV": "production",
           "CIT_SECRET_KEY": SECRET, "CIT_LOG_ACCESS": "false",
           "CIT_DATA_DIR": str(log.parent / "data")}  # fmt: skip
    root = ROOT
    if server == "baseline":
        command = [str(VENV_BIN / "uvicorn"), "--factory", "bench.minimal_review_app:create",
                   "--port", str(port), "--log-level", "warning", "--no-access-log"]  # fmt: skip
    else:
        command = [str(VENV_BIN / "cit"), "serve", "--port", str(port), "--no-worker"]
        if server != "service":  # "before": the service from another source tree
            root = Path(BEFORE_ROOTS[server])
            env["PYTHONPATH"] = str(root)
    return subprocess.Popen(command, env=env, cwd=root, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


# Other source trees served as "before" (--before DIR), to compare a change in one run.
BEFORE_ROOTS: dict[str, str] = {}


def _coder(
    base: str, token: str, count: int, out: dict[str, list[float]], errors: list[str]
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=60) as http:
        for _ in range(count):
            began = time.perf_counter()
            got = http.post("/api/v1/review/next", json={})
            took_next = time.perf_counter() - began
            if got.status_code != 200:
                errors.append(f"next {got.status_code} {got.text[:200]}")
                continue
            incident = got.json()["incident"]["id"]
            began = time.perf_counter()
            saved = http.put(
                f"/api/v1/incidents/{incident}/codings/me",
                headers={"If-Match": got.headers.get("etag", "*")},
                json={"codes": [{"code": "complaint", "origin": "suggestion"}]},
            )
            took_save = time.perf_counter() - began
            if saved.status_code != 200:
                errors.append(f"save {saved.status_code} {saved.text[:200]}")
                continue
            out["next"].append(took_next)
            out["save"].append(took_save)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc): the server's own cost, less noisy
    than wall time on a shared machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(server: str, url: str, coders: int, per_coder: int, workdir: Path) -> dict[str, Any]:
    tokens = _tokens(url, coders) if server != "baseline" else ["-"] * coders
    port = _free_port()
    process = _serve(server, url, port, workdir / f"{server}.log")
    try:
        _wait_up(port, process)
        base = f"http://127.0.0.1:{port}"
        warm = {"next": [], "save": []}  # type: dict[str, list[float]]
        _coder(base, tokens[0], 5, warm, [])
        timings: dict[str, list[float]] = {"next": [], "save": []}
        errors: list[str] = []
        threads = [
            threading.Thread(target=_coder, args=(base, t, per_coder, timings, errors))
            for t in tokens
        ]
        cpu_began = _cpu_seconds(process.pid)
        began = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - began
        cpu = _cpu_seconds(process.pid) - cpu_began
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)

    def pct(values: list[float], q: float) -> float:
        return (
            round(statistics.quantiles(values, n=100)[q - 1] * 1000, 1) if len(values) > 2 else 0.0
        )

    done = len(timings["save"])
    return {
        "server": server, "coders": coders, "codings": done,
        "codings_per_s": round(done / seconds, 1),
        "next_p50_ms": pct(timings["next"], 50), "next_p99_ms": pct(timings["next"], 99),
        "save_p50_ms": pct(timings["save"], 50), "save_p99_ms": pct(timings["save"], 99),
        "errors": len(errors), "first_error": errors[0] if errors else None,
        "server_cpu_ms_per_coding": round(cpu * 1000 / max(done, 1), 2),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--stories", type=int, default=1_000_000)
    parser.add_argument("--codings", type=int, default=300, help="per coder and run")
    parser.add_argument("--reset", action="store_true")
    parser.add_argument("--build-only", action="store_true", help="build the database and stop")
    parser.add_argument(
        "--before",
        metavar="DIR",
        help="also serve the service from this source tree (say, `git archive` of an earlier "
        "commit), in the same run, as `before`",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every server this many times, the order reversed each round; the table "
        "gives each figure's median over the rounds (ratios: each round's own baseline)",
    )
    args = parser.parse_args()
    url = args.database_url
    # A stable digest (hash() is salted per process: the database was rebuilt on every run).
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    marker = ROOT / "var" / "bench" / f"review-{digest}-{args.stories}.built"
    marker.parent.mkdir(parents=True, exist_ok=True)
    if (
        args.reset
        or not marker.exists()
        or (url.startswith("sqlite") and not Path(url.removeprefix("sqlite:///")).exists())
    ):
        if url.startswith("sqlite"):
            Path(url.removeprefix("sqlite:///")).unlink(missing_ok=True)
        build(url, args.stories)
        marker.touch()
    if args.build_only:
        return
    workdir = marker.parent
    servers = ["service", "baseline"]
    if args.before:
        BEFORE_ROOTS["before"] = args.before
        servers.insert(1, "before")
    results = []
    for round_ in range(args.rounds):
        for coders in (1, 8):
            order = servers if (coders == 1) == (round_ % 2 == 0) else servers[::-1]
            per_coder = args.codings if coders == 1 else args.codings // 4
            for server in order:
                result = run(server, url, coders, per_coder, workdir)
                result["round"] = round_
                results.append(result)
                print(json.dumps(result), flush=True)
    print()
    print(
        "| coders | server | codings/s | baseline codings/s | ratio | next p50/p99 ms "
        "| save p50/p99 ms | baseline next p50/p99 | baseline save p50/p99 | errors "
        "| server CPU ms/coding (baseline) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")

    def median(name: str, coders: int, key: str) -> float:
        values = [r[key] for r in results if r["server"] == name and r["coders"] == coders]
        return round(statistics.median(values), 2)

    def ratio(name: str, coders: int) -> float:
        by_round = {(r["server"], r["round"]): r["codings_per_s"]
                    for r in results if r["coders"] == coders}  # fmt: skip
        return statistics.median(
            by_round[name, i] / max(by_round["baseline", i], 0.1) for i in range(args.rounds)
        )

    keys = ("codings_per_s", "next_p50_ms", "next_p99_ms", "save_p50_ms", "save_p99_ms",
            "errors", "server_cpu_ms_per_coding")  # fmt: skip
    for coders, name in [(c, n) for c in (1, 8) for n in servers if n != "baseline"]:
        ours = {k: median(name, coders, k) for k in keys}
        base = {k: median("baseline", coders, k) for k in keys}
        ours["errors"] = sum(r["errors"] for r in results
                             if r["server"] == name and r["coders"] == coders)  # fmt: skip
        print(f"| {coders} | {name} | {ours['codings_per_s']} | {base['codings_per_s']} | "
              f"{ratio(name, coders):.2f} | "
              f"{ours['next_p50_ms']} / {ours['next_p99_ms']} | "
              f"{ours['save_p50_ms']} / {ours['save_p99_ms']} | "
              f"{base['next_p50_ms']} / {base['next_p99_ms']} | "
              f"{base['save_p50_ms']} / {base['save_p99_ms']} | {ours['errors']} | "
              f"{ours['server_cpu_ms_per_coding']} "
              f"({base['server_cpu_ms_per_coding']}) |")  # fmt: skip


if __name__ == "__main__":
    main()
