"""Exports at scale: 1,000,000 stories (real text, suggestions for every story, a tenth coded
with a coding and final codes), exported through the service's own code (app.exports.stream,
what the API streams and `cit export` writes) as CSV, JSONL and xlsx, beside a raw baseline
that dumps the same story columns with a plain cursor (SQLite) or COPY (PostgreSQL).

    python -m bench.export_scale                                  # SQLite file in var/bench
    python -m bench.export_scale --database-url postgresql+psycopg://postgres@127.0.0.1:5432/cit_bench_export

The database is built once (kept for later runs; `--reset` rebuilds it). Every measurement runs
in a child process of its own, so that its peak RSS (ru_maxrss) is its own; each is run at
100,000 stories (a `submitted_to` filter) and at all stories, so a flat RSS shows as equal
figures. Output goes to /dev/null through the same chunk loop `cit export` uses.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.engine import make_url

from app import migrate
from app.db import create_db_engine, make_sessionmaker

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = f"sqlite:///{ROOT / 'var' / 'bench' / 'export-scale.db'}"
START = datetime(2024, 1, 1, tzinfo=UTC)
CHUNK = 20_000
CODES = ("complaint", "special_request", "extra_mile", "owner_error")
TARGET = 50_000  # stories/s, CSV and JSONL
RAW_COLUMNS = (
    "id, survey_id, submitted_at, source, consent, language, occurred_text, occurred_on, "
    "circumstances, what_happened, outcome, valence, touchpoint, channel, status, "
    "exclusion_reason, finalized_at, coders_required, attributes"
)


def _moment(i: int, sqlite: bool) -> Any:
    moment = START + timedelta(seconds=i * 60)
    return moment.replace(tzinfo=None).isoformat(" ", "microseconds") if sqlite else moment


def _texts() -> list[str]:
    try:
        from bench._data import load_stories

        return load_stories(3000)
    except Exception:  # the data sets are optional for this benchmark's shape
        return [f"The agent at gate {i} rebooked me without being asked." for i in range(3000)]


def build(url: str, n: int) -> None:
    """Migrate and load n stories (executemany on SQLite, COPY on PostgreSQL)."""
    migrate.upgrade(url)
    engine = create_db_engine(url)
    sqlite = engine.dialect.name == "sqlite"
    texts = _texts()
    rng = random.Random(5)
    with engine.begin() as conn:
        now = _moment(0, sqlite)
        conn.execute(
            text(
                "INSERT INTO surveys (slug, title, introduction, language, questions, choices, "
                "status, created_at, updated_at, version, double_coding_share, review_order) "
                "VALUES ('bench', 'Bench', '', 'en', '{}', '{}', 'open', :now, :now, 1, 0, "
                "'oldest')"
            ),
            {"now": now},
        )
        conn.execute(
            text(
                "INSERT INTO codebooks (key, name, created_at, current_version) "
                "VALUES ('bench', 'Bench', :now, 1)"
            ),
            {"now": now},
        )
        conn.execute(
            text(
                "INSERT INTO codebook_versions (codebook_id, number, content, change_note, "
                "created_by, created_at) VALUES (1, 1, '{}', '', 'bench', :now)"
            ),
            {"now": now},
        )
        conn.execute(
            text("INSERT INTO users (name, role, created_at) VALUES ('coder', 'researcher', :now)"),
            {"now": now},
        )
    raw = engine.raw_connection()
    cursor = raw.cursor()
    started = time.perf_counter()
    if not sqlite:
        cursor.execute("ALTER TABLE incidents DISABLE TRIGGER USER")
        cursor.execute("ALTER TABLE incident_codes DISABLE TRIGGER USER")
    else:
        cursor.execute("BEGIN IMMEDIATE")
    incident_cols = (
        "id, survey_id, submission_key, what_happened, outcome, valence, touchpoint, channel, "
        "language, attributes, redacted, redaction_spans, submitted_at, status, finalized_at, "
        "version, source, consent, coders_required"
    )
    batches: dict[str, list[tuple[Any, ...]]] = {}

    def flush() -> None:
        for table, columns, rows in (
            ("incidents", incident_cols, batches.get("incidents", [])),
            (
                "suggestions",
                "id, incident_id, items, certainty, codebook_version_id, created_at",
                batches.get("suggestions", []),
            ),
            (
                "codings",
                "id, incident_id, coder_id, codebook_version_id, excluded, note, revision, "
                "created_at, updated_at",
                batches.get("codings", []),
            ),
            ("coding_codes", "id, coding_id, code, decision", batches.get("coding_codes", [])),
            (
                "incident_codes",
                "incident_id, code, codebook_version_id, source, confirmed_by, confirmed_at",
                batches.get("incident_codes", []),
            ),
        ):
            if not rows:
                continue
            if sqlite:
                marks = ", ".join("?" * len(rows[0]))
                cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)
            else:
                with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
        batches.clear()
        if not sqlite:
            raw.commit()

    coding_id = 0
    for i in range(1, n + 1):
        story = texts[i % len(texts)]
        coded = i % 10 == 0
        moment = _moment(i, sqlite)
        segment = ("business", "leisure", "family")[i % 3]
        batches.setdefault("incidents", []).append(
            (
                i, 1, f"bench-{i}", story, "It was sorted out." if i % 2 else None,
                "dissatisfying" if i % 3 else "satisfying", "Gate", "In person", "en",
                json.dumps({"segment": segment}), json.dumps({"what_happened": story}), "{}",
                moment, "coded" if coded else "new", moment if coded else None, 1,
                "form", "not_asked", 1 if coded else None,
            )
        )  # fmt: skip
        items = []
        for c in CODES:
            suggested = rng.random() > 0.7
            # A suggested code quotes its evidence (a piece of the story), as the rules do.
            start = rng.randrange(max(1, len(story) - 20))
            evidence = [
                {
                    "field": "what_happened",
                    "start": start,
                    "end": start + 20,
                    "text": story[start : start + 20],
                    "indicator": "phrase",
                }
            ]
            items.append(
                {
                    "code": c,
                    "score": round(rng.random(), 3),
                    "suggested": suggested,
                    "source": "rules",
                    "evidence": evidence if suggested else [],
                }
            )
        # As the service stores it (orjson, app.db.JSON_OPTIONS).
        batches.setdefault("suggestions", []).append(
            (i, i, orjson.dumps(items).decode(), 0.2, 1, moment)
        )
        if coded:
            coding_id += 1
            code = CODES[i % 4]
            batches.setdefault("codings", []).append(
                (coding_id, i, 1, 1, False, "a memo", 1, moment, moment)
            )
            batches.setdefault("coding_codes", []).append((coding_id, coding_id, code, "added"))
            batches.setdefault("incident_codes", []).append((i, code, 1, "review", "coder", moment))
        if i % CHUNK == 0:
            flush()
    flush()
    if sqlite:
        cursor.execute("COMMIT")
    else:
        cursor.execute("ALTER TABLE incidents ENABLE TRIGGER USER")
        cursor.execute("ALTER TABLE incident_codes ENABLE TRIGGER USER")
        for table in ("incidents", "suggestions", "codings", "coding_codes"):
            cursor.execute(
                f"SELECT setval('{table}_id_seq', (SELECT COALESCE(max(id), 1) FROM {table}))"
            )
        raw.commit()
    raw.close()
    # In a transaction of its own that commits (on SQLite an AUTOCOMMIT connection here left
    # no sqlite_stat1 behind); the worker keeps the statistics fresh afterwards.
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    engine.dispose()
    print(f"built {n:,} stories in {time.perf_counter() - started:.0f} s", file=sys.stderr)


def stories_in(url: str) -> int:
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT COUNT(*) FROM incidents")).scalar_one())
    except Exception:
        return 0
    finally:
        engine.dispose()


def child(url: str, what: str, limit: int | None) -> dict[str, Any]:
    """One measurement (run in its own process): seconds, bytes written, peak RSS."""
    from app.exports import stream
    from app.exports.service import CLI_VIEWER, TABLES, ExportSpec
    from app.incidents.service import IncidentFilters

    engine = create_db_engine(url)
    to = START + timedelta(seconds=(limit + 1) * 60) if limit else None
    written = 0
    started = time.perf_counter()
    with open(os.devnull, "wb") as sink:
        if what == "raw-xlsx":
            # The library alone: the same story columns from a plain cursor into XlsxWriter's
            # constant-memory mode (what the xlsx export cannot be faster than).
            import tempfile

            import xlsxwriter

            raw = engine.raw_connection()
            cursor = raw.cursor()
            where = "WHERE survey_id = 1" + (f" AND id <= {limit}" if limit else "")
            handle, path = tempfile.mkstemp(suffix=".xlsx")
            os.close(handle)
            workbook = xlsxwriter.Workbook(path, {"constant_memory": True})
            sheet = workbook.add_worksheet("stories")
            cursor.execute(f"SELECT {RAW_COLUMNS} FROM incidents {where} ORDER BY id")
            number = 0
            while rows := cursor.fetchmany(5000):
                for row in rows:
                    sheet.write_row(
                        number,
                        0,
                        [v if isinstance(v, int | str) or v is None else str(v) for v in row],
                    )
                    number += 1
            workbook.close()
            written = os.path.getsize(path)
            os.unlink(path)
            raw.close()
        elif what == "raw":
            raw = engine.raw_connection()
            cursor = raw.cursor()
            where = "WHERE survey_id = 1" + (f" AND id <= {limit}" if limit else "")
            if engine.dialect.name == "postgresql":
                with cursor.copy(
                    f"COPY (SELECT {RAW_COLUMNS} FROM incidents {where} ORDER BY id) "
                    "TO STDOUT WITH (FORMAT csv, HEADER)"
                ) as copy:
                    for chunk in copy:
                        written += len(chunk)
                        sink.write(chunk)
            else:
                import csv
                import io

                buffer = io.StringIO()
                writer = csv.writer(buffer)
                cursor.execute(f"SELECT {RAW_COLUMNS} FROM incidents {where} ORDER BY id")
                while rows := cursor.fetchmany(5000):
                    writer.writerows(rows)
                    data = buffer.getvalue().encode()
                    written += len(data)
                    sink.write(data)
                    buffer.seek(0)
                    buffer.truncate()
            raw.close()
        else:
            fmt, _, variant = what.partition(":")
            # "-python": the stories CSV or the JSONL by the Python builder (the reference),
            # else by the database-made lines (app.exports.lines, json_lines), what the service
            # serves.
            fmt, _, builder = fmt.partition("-")
            variant, _, table_builder = variant.partition("-")
            spec = ExportSpec(
                filters=IncidentFilters(survey_id=1, submitted_to=to),
                view="redacted" if variant == "redacted" else "original",
                viewer=CLI_VIEWER,
            )
            # csv:codings, csv:suggestions, csv:adjudications: one side table alone.
            table = (
                "stories"
                if variant in ("stories", "redacted")
                else variant
                if variant in TABLES
                else None
            )
            sql = "python" not in (builder, table_builder)
            for chunk in stream.chunks(make_sessionmaker(engine), spec, fmt, table, sql=sql):
                written += len(chunk)
                sink.write(chunk)
    seconds = time.perf_counter() - started
    engine.dispose()
    return {
        "what": what,
        "limit": limit,
        "seconds": seconds,
        "bytes": written,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        # The largest process the export started (the zip's side tables, app.exports.side).
        "child_peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        # CPU seconds of this process and the processes it started (not the database server's).
        "cpu_s": sum(
            usage.ru_utime + usage.ru_stime
            for usage in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--stories", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--reset", action="store_true")
    parser.add_argument(
        "--only",
        default="raw,csv:stories,csv:stories-python,csv:redacted,csv:redacted-python,csv,jsonl,jsonl-python,xlsx:stories",
        help="comma-separated measurements",
    )
    parser.add_argument("--child", nargs=2, metavar=("WHAT", "LIMIT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    url = args.database_url
    if args.child:
        what, limit = args.child
        print(json.dumps(child(url, what, int(limit) or None)))
        return 0
    if url.startswith("postgresql") and make_url(url).database in ("test", "postgres"):
        parser.error("use a scratch database of its own, never `test`")
    if args.reset or stories_in(url) != args.stories:
        if url.startswith("sqlite"):
            Path(make_url(url).database or "").unlink(missing_ok=True)
        else:
            engine = create_db_engine(url)
            with engine.begin() as conn:
                conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
                conn.execute(text("CREATE SCHEMA public"))
            engine.dispose()
        build(url, args.stories)
    results = []
    for what in args.only.split(","):
        for limit in (args.small, 0):
            out = subprocess.run(
                [sys.executable, "-m", "bench.export_scale", "--database-url", url,
                 "--child", what, str(limit)],
                capture_output=True, text=True, check=True, cwd=ROOT,
            )  # fmt: skip
            result = json.loads(out.stdout.strip().splitlines()[-1])
            stories = limit or args.stories
            result["stories_per_s"] = stories / result["seconds"]
            results.append(result)
            print(
                f"{what:>14} {stories:>9,} stories  {result['seconds']:7.1f} s  "
                f"{result['stories_per_s']:>9,.0f} stories/s  "
                f"{result['bytes'] / 1e6:8.0f} MB  peak RSS {result['peak_rss_mib']:6.0f} MiB"
                f"  (child {result.get('child_peak_rss_mib', 0):4.0f} MiB)"
                f"  CPU {result.get('cpu_s', 0):6.1f} s",
                flush=True,
            )
    print(
        json.dumps(
            {
                "database": make_url(url).get_backend_name(),
                "python": platform.python_version(),
                "stories": args.stories,
                "target_stories_per_s": TARGET,
                "results": results,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
