"""Workbench pages at scale: the coding page and the queue page rendered server-side over a
database of 1,000,000 stories, timed beside the JSON API's read of the same stories.

    python -m bench.workbench_pages                                  # SQLite, var/bench/
    python -m bench.workbench_pages --database-url postgresql+psycopg://postgres@127.0.0.1:5432/cit_workbench_bench

The database is built once (stories with redacted text and suggestions, codings by 50 coders,
final codes) and reused on later runs (`--rebuild` to start again; on PostgreSQL the public
schema of that database is dropped: use a scratch database). Every request goes through the
ASGI app with httpx (TestClient): the coding page and the queue page with a researcher's session
cookie, the JSON read (`GET /api/v1/incidents/{id}`) with the same researcher's bearer token.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select, text
from sqlalchemy.engine import make_url

from app import migrate
from app.accounts import service as accounts
from app.auth import create_token
from app.codebooks.service import ensure_default_codebook
from app.config import Settings
from app.db import create_db_engine, make_sessionmaker, session_scope
from app.incidents.redaction import redaction_columns
from app.main import create_app
from app.models import Incident
from app.reports import rollups
from app.reviews import overview
from app.surveys import service as surveys
from app.surveys.schemas import SurveyCreate

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = f"sqlite:///{ROOT / 'var' / 'bench' / 'workbench-pages.db'}"
CODEBOOK = ROOT / "codebooks" / "cit-service-encounters.yaml"
CODES = ("complaint", "special_request", "extra_mile", "owner_error")
START = datetime(2024, 1, 1, tzinfo=UTC)
DAYS = 731
CHUNK = 20_000
CODERS = 50
BENCH_CODER = "bench-coder"
PASSWORD = "bench password, not secret"
TARGET_P50_MS, TARGET_P99_MS = 30.0, 100.0

OPENINGS = (
    "I was flying from Denver to Boston on a Friday evening.",
    "We checked in at the hotel after a long drive with two tired children.",
    "I called the bank about a card payment that I did not recognise.",
    "My parcel was supposed to arrive before the weekend.",
    "At the airport the queue at the desk was very long.",
)
EVENTS = (
    ("The agent rebooked me without being asked and walked me to the gate.", "extra_mile",
     "walked me to the gate"),
    ("They lost my bag and nobody called back for four days.", "complaint", "lost my bag"),
    ("I asked for a seat next to my son and she found two seats together.", "special_request",
     "asked for a seat"),
    ("I had booked the wrong date, but the clerk changed it for free.", "owner_error",
     "booked the wrong date"),
    ("The staff were rude and told me it was not their problem.", "complaint", "rude"),
    ("Write to me at jane.doe@example.com, said the manager, and I will sort it out.",
     "extra_mile", "sort it out"),
)  # fmt: skip
OUTCOMES = (
    "In the end I made my connection.",
    "I still have no refund and I will not fly with them again.",
    "We will certainly come back next year.",
    "It took another week to get it sorted.",
)


def _templates() -> list[dict[str, Any]]:
    """A few dozen distinct stories with their redaction and rule-like suggestions."""
    out = []
    for i, opening in enumerate(OPENINGS):
        for j, (event, code, phrase) in enumerate(EVENTS):
            outcome = OUTCOMES[(i + j) % len(OUTCOMES)]
            answers = {
                "occurred": f"2025-0{1 + (i + j) % 9}-1{j}",
                "circumstances": opening,
                "what_happened": f"{event} It was a busy day for everyone.",
                "outcome": outcome,
            }
            columns = redaction_columns(answers)
            redacted = columns["redacted"]
            where = redacted["what_happened"].find(phrase)
            items = []
            for key in CODES:
                evidence = (
                    [{"field": "what_happened", "start": where, "end": where + len(phrase),
                      "text": phrase, "indicator": phrase}]
                    if key == code and where >= 0 else []
                )  # fmt: skip
                items.append(
                    {"code": key, "score": 0.75 if key == code else 0.1,
                     "suggested": key == code, "source": "rules", "evidence": evidence}
                )  # fmt: skip
            out.append(
                {
                    "answers": answers,
                    "redacted": json.dumps(redacted),
                    "spans": json.dumps(columns["redaction_spans"]),
                    "items": json.dumps(items),
                    "code": code,
                }
            )
    return out


def _stamp(moment: datetime | None, sqlite: bool) -> Any:
    if moment is None or not sqlite:
        return moment
    return moment.replace(tzinfo=None).isoformat(" ", "microseconds")


def _rows(
    n: int, surveys: list[int], version: int, coder_ids: list[int], sqlite: bool
) -> Iterator[dict[str, list[tuple[Any, ...]]]]:
    """Chunks of rows for incidents, suggestions, codings, coding_codes and incident_codes:
    85 % coded (one coding each, by one of the coders), 5 % excluded, 10 % new."""
    rng = random.Random(8)
    templates = _templates()
    chunk: dict[str, list[tuple[Any, ...]]] = {
        k: [] for k in ("incidents", "suggestions", "codings", "coding_codes", "incident_codes")
    }
    code_id = 0
    for story in range(1, n + 1):
        t = templates[story % len(templates)]
        submitted = START + timedelta(seconds=rng.randrange(DAYS * 86_400))
        roll = rng.random()
        status = "coded" if roll < 0.85 else "excluded" if roll < 0.90 else "new"
        final = submitted + timedelta(days=rng.randint(0, 20)) if status != "new" else None
        a = t["answers"]
        chunk["incidents"].append(
            (
                story, rng.choice(surveys), f"bench-{story}", a["occurred"], a["circumstances"],
                a["what_happened"], a["outcome"],
                "dissatisfying" if t["code"] == "complaint" else "satisfying", "en", "{}",
                t["redacted"], t["spans"], _stamp(submitted, sqlite), status,
                _stamp(final, sqlite), "not an incident" if status == "excluded" else None,
                1, None if status == "new" else 1,
            )
        )  # fmt: skip
        chunk["suggestions"].append(
            (story, story, t["items"], 0.35, version, _stamp(submitted, sqlite))
        )
        if status != "new":
            stamp = _stamp(final, sqlite)
            chunk["codings"].append(
                (story, story, rng.choice(coder_ids), version, status == "excluded",
                 "not an incident" if status == "excluded" else None, None, 1, stamp, stamp)
            )  # fmt: skip
            if status == "coded":
                code_id += 1
                chunk["coding_codes"].append((code_id, story, t["code"], "accepted"))
                chunk["incident_codes"].append(
                    (story, t["code"], version, "review", "bench", stamp)
                )
        if len(chunk["incidents"]) >= CHUNK:
            yield chunk
            chunk = {k: [] for k in chunk}
    if chunk["incidents"]:
        yield chunk


COLUMNS = {
    "incidents": "id, survey_id, submission_key, occurred_text, circumstances, what_happened, "
    "outcome, valence, language, attributes, redacted, redaction_spans, submitted_at, status, "
    "finalized_at, exclusion_reason, version, coders_required",
    "suggestions": "id, incident_id, items, certainty, codebook_version_id, created_at",
    "codings": "id, incident_id, coder_id, codebook_version_id, excluded, exclusion_reason, "
    "note, revision, created_at, updated_at",
    "coding_codes": "id, coding_id, code, decision",
    "incident_codes": "incident_id, code, codebook_version_id, source, confirmed_by, confirmed_at",
}


def _prepare(engine: Engine, settings: Settings) -> tuple[list[int], int, list[int]]:
    with session_scope(make_sessionmaker(engine)) as session:
        version = ensure_default_codebook(session, CODEBOOK)
        ids = [
            surveys.create_survey(
                session, SurveyCreate(title=title, open=True, codebook_id=version.codebook_id), None
            ).id
            for title in ("Airline stories", "Hotel stays")
        ]
        user, link = accounts.create_person(
            session, name=BENCH_CODER, role="researcher", actor=None, settings=settings
        )
        accounts.set_password(session, link.url.rsplit("/", 1)[1], PASSWORD, PASSWORD)
        coders = [user.id]
        for k in range(1, CODERS):
            other, _ = accounts.create_person(
                session, name=f"coder-{k}", role="researcher", actor=None, settings=settings
            )
            coders.append(other.id)
        return ids, version.id, coders


def load(engine: Engine, n: int, settings: Settings) -> dict[str, Any]:
    surveys, version, coders = _prepare(engine, settings)
    sqlite = engine.dialect.name == "sqlite"
    raw = engine.raw_connection()
    counts = dict.fromkeys(COLUMNS, 0)
    started = time.perf_counter()
    try:
        cursor = raw.cursor()
        if sqlite:
            cursor.execute("BEGIN IMMEDIATE")
        else:
            for table in ("incidents", "incident_codes"):
                cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        for chunk in _rows(n, surveys, version, coders, sqlite):
            for table, rows in chunk.items():
                if not rows:
                    continue
                counts[table] += len(rows)
                if sqlite:
                    marks = ", ".join("?" * len(rows[0]))
                    cursor.executemany(
                        f"INSERT INTO {table} ({COLUMNS[table]}) VALUES ({marks})", rows
                    )
                else:
                    with cursor.copy(f"COPY {table} ({COLUMNS[table]}) FROM STDIN") as copy:
                        for row in rows:
                            copy.write_row(row)
        if sqlite:
            cursor.execute("COMMIT")
        else:
            for table in ("incidents", "suggestions", "codings", "coding_codes"):
                cursor.execute(f"SELECT setval('{table}_id_seq', (SELECT max(id) FROM {table}))")
            for table in ("incidents", "incident_codes"):
                cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
            raw.commit()
    finally:
        raw.close()
    if not sqlite:
        with session_scope(make_sessionmaker(engine)) as session:
            rollups.rebuild(session)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    else:
        with engine.connect() as conn:
            conn.execute(text("ANALYZE"))
    return {**counts, "seconds": time.perf_counter() - started}


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return {
        "p50": statistics.median(ordered),
        "p99": at(0.99),
        "max": ordered[-1],
        "n": len(ordered),
    }


class ServerTimer:
    """ASGI wrapper: how long the app itself took for the last request (from its start to the
    last byte of the response), without the test client's thread hand-over."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.last_ms = 0.0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        began = time.perf_counter()
        await self.app(scope, receive, send)
        if scope["type"] == "http":
            self.last_ms = (time.perf_counter() - began) * 1000


def _time(
    client: TestClient, timer: ServerTimer, paths: list[str], headers: dict[str, str]
) -> tuple[dict[str, float], dict[str, float]]:
    for path in paths[:5]:  # warm-up
        assert client.get(path, headers=headers).status_code == 200
    outside, inside = [], []
    for path in paths:
        began = time.perf_counter()
        response = client.get(path, headers=headers)
        outside.append((time.perf_counter() - began) * 1000)
        inside.append(timer.last_ms)
        assert response.status_code == 200, (path, response.status_code)
    return _percentiles(inside), _percentiles(outside)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--stories", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=300, help="timed requests per page")
    parser.add_argument("--rebuild", action="store_true", help="build the database again")
    args = parser.parse_args(argv)

    url = args.database_url
    backend = make_url(url).get_backend_name()
    settings = Settings(
        env="test",
        database_url=url,
        secret_key="bench-secret-key-not-for-production",
        data_dir=ROOT / "var" / "bench",
        worker_in_process=False,
    )
    engine = create_db_engine(url)
    existing = 0
    try:
        with engine.connect() as conn:
            existing = conn.execute(select(func.count(Incident.id))).scalar_one()
    except Exception:  # no schema yet
        existing = 0
    if args.rebuild or existing != args.stories:
        if backend == "sqlite":
            engine.dispose()
            path = Path(make_url(url).database or "")
            path.parent.mkdir(parents=True, exist_ok=True)
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            engine = create_db_engine(url)
        else:
            with engine.begin() as conn:
                conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
                conn.execute(text("CREATE SCHEMA public"))
        migrate.upgrade(url)
        loaded = load(engine, args.stories, settings)
        print(f"built: {json.dumps({k: round(v, 1) for k, v in loaded.items()})}")
    engine.dispose()

    app = create_app(settings)
    timer = ServerTimer(app)
    rng = random.Random(5)
    with engine.connect() as conn:
        open_ids = list(
            conn.execute(
                select(Incident.id).where(Incident.status == "new").order_by(Incident.id)
            ).scalars()
        )
    sample = rng.sample(open_ids, min(args.requests, len(open_ids)))
    with TestClient(timer) as client:
        form = client.get("/sign-in").text
        csrf = form.split('name="csrf_token" value="')[1].split('"')[0]
        signed = client.post(
            "/sign-in",
            data={"csrf_token": csrf, "name": BENCH_CODER, "password": PASSWORD},
            follow_redirects=False,
        )
        assert signed.status_code == 303, signed.text
        with session_scope(app.state.sessionmaker) as session:
            _, token = create_token(session, name=BENCH_CODER, role="researcher")
        bearer = {"Authorization": f"Bearer {token}"}
        # Hold a few stories (left half-done) so that the queue page lists some.
        for _ in range(3):
            client.post("/work/next", data={"csrf_token": _page_csrf(client)})
        with engine.connect() as conn:
            mine = conn.execute(
                text(
                    "SELECT count(*) FROM codings c JOIN users u ON u.id = c.coder_id "
                    "WHERE u.name = :name"
                ),
                {"name": BENCH_CODER},
            ).scalar_one()
        # The first queue page of a process counts the coder's codings per survey in full;
        # later visits only count the new ones (app.reviews.overview.coded_per_survey).
        overview._per_survey.clear()
        began = time.perf_counter()
        assert client.get("/work").status_code == 200
        first_queue_ms = (time.perf_counter() - began) * 1000
        results = {}
        # Interleaved, so that load on the machine hits all three alike.
        json_paths = [f"/api/v1/incidents/{i}" for i in sample]
        page_paths = [f"/work/stories/{i}" for i in sample]
        results["JSON API read, GET /api/v1/incidents/{id}"] = _time(
            client, timer, json_paths, bearer
        )
        results["coding page, GET /work/stories/{id}"] = _time(client, timer, page_paths, {})
        results["queue page, GET /work"] = _time(client, timer, ["/work"] * len(sample), {})
        results["JSON API read, again (after the pages)"] = _time(client, timer, json_paths, bearer)
    print(
        f"# Workbench pages: {backend}, {existing or args.stories:,} stories, "
        f"{len(open_ids):,} open; {BENCH_CODER} has {mine:,} codings"
    )
    print(f"python {platform.python_version()}, {platform.machine()}")
    print("| request | server p50 | server p99 | end-to-end p50 | end-to-end p99 | n |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, (r, e) in results.items():
        print(
            f"| {name} | {r['p50']:.1f} | {r['p99']:.1f} | {e['p50']:.1f} | {e['p99']:.1f} "
            f"| {r['n']} |"
        )
    print(
        f"| queue page, first visit in a process (counts all {mine:,} codings per survey) "
        f"| {first_queue_ms:.1f} | | | | 1 |"
    )
    pages = [server for k, (server, _) in results.items() if "page" in k]
    met = all(r["p50"] <= TARGET_P50_MS and r["p99"] <= TARGET_P99_MS for r in pages)
    print(
        f"targets p50 <= {TARGET_P50_MS:.0f} ms, p99 <= {TARGET_P99_MS:.0f} ms: "
        f"{'met' if met else 'NOT met'}"
    )
    return 0


def _page_csrf(client: TestClient) -> str:
    page = client.get("/work").text
    return page.split('name="csrf_token" value="')[1].split('"')[0]


if __name__ == "__main__":
    raise SystemExit(main())
