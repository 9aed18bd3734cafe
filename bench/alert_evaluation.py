"""Alert evaluation cost: what evaluating the alert rules adds to the worker's fold after a
batch of 10,000 confirmed codes.

    python -m bench.alert_evaluation                         # SQLite file in var/bench
    python -m bench.alert_evaluation --database-url postgresql+psycopg://postgres@127.0.0.1:5432/cit_bench

Setup: one survey with a year of history (default 24,000 coded stories, folded), then, per
round, a batch of 10,000 new confirmed stories with one final code each (spread over the last
two months, touchpoints and channels varied; inserted with the rollup triggers on, not timed).
Timed: `app.alerts.service.fold_and_evaluate`, i.e. the fold plus the evaluation of the
survey's enabled rules, in alternating order with 0 rules and with R rules (a mix of monthly and
weekly, whole-survey and per-touchpoint/channel rules, rise/fall/threshold). Reported: the
median fold time with and without rules and the difference per rule. Target: < 50 ms per rule.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, text, update

from app import migrate
from app.alerts.service import fold_and_evaluate
from app.config import Settings
from app.db import create_db_engine, make_sessionmaker, session_scope
from app.models import AlertRule, Codebook, CodebookVersion, Incident, IncidentCode, Survey

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = f"sqlite:///{ROOT / 'var' / 'bench' / 'alert-evaluation.db'}"
CODES = ("complaint", "special_request", "extra_mile", "owner_error")
TOUCHPOINTS = ("Check-in", "Security", "Gate", "On board", "Baggage", None)
CHANNELS = ("In person", "Phone", "App", "Web", None)
NOW = datetime(2025, 12, 20, 12, tzinfo=UTC)
_serial = itertools.count(1)


def _reset(url: str) -> None:
    if url.startswith("sqlite"):
        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
    else:
        engine = create_db_engine(url)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()
    migrate.upgrade(url)


def _stories(
    factory: Any, survey_id: int, version_id: int, n: int, first: datetime, days: int
) -> None:
    rng = random.Random(next(_serial))
    rows, codes = [], []
    for _ in range(n):
        moment = first + timedelta(days=rng.randrange(days), hours=rng.randrange(10))
        rows.append(
            {
                "survey_id": survey_id,
                "submission_key": f"bench-{next(_serial)}",
                "what_happened": "A story.",
                "valence": rng.choice(("satisfying", "dissatisfying")),
                "touchpoint": rng.choice(TOUCHPOINTS),
                "channel": rng.choice(CHANNELS),
                "language": "en",
                "attributes": {},
                "redacted": {},
                "redaction_spans": {},
                "submitted_at": moment,
                "status": "coded",
                "finalized_at": moment,
                "version": 1,
                "source": "import",
                "consent": "unknown",
            }
        )
    with session_scope(factory) as session:
        ids = session.scalars(insert(Incident).returning(Incident.id), rows).all()
        for incident_id in ids:
            codes.append(
                {
                    "incident_id": incident_id,
                    "code": rng.choices(CODES, weights=(40, 20, 25, 15))[0],
                    "codebook_version_id": version_id,
                    "source": "review",
                    "confirmed_by": "bench",
                    "confirmed_at": NOW,
                }
            )
        session.execute(insert(IncidentCode), codes)


def _rules(survey_id: int, count: int) -> list[dict[str, Any]]:
    shapes = itertools.cycle(
        [
            {"period": "month", "trigger": "rise"},
            {"period": "week", "trigger": "fall", "group_field": "touchpoint",
             "group_value": "Gate"},
            {"period": "month", "trigger": "above", "threshold": 0.3, "group_field": "channel",
             "group_value": "App"},
            {"period": "quarter", "trigger": "change"},
            {"period": "week", "trigger": "rise", "group_field": "channel", "group_value": "Web"},
        ]
    )  # fmt: skip
    rules = []
    for i in range(count):
        shape = next(shapes)
        rules.append(
            {
                "survey_id": survey_id,
                "name": f"rule {i}",
                "code": CODES[i % len(CODES)],
                "valence": ("dissatisfying", "satisfying")[i % 2],
                "measure": "share",
                "level": 0.05,
                "min_base": 30,
                "enabled": False,
                "created_by": "bench",
                **shape,
            }
        )
    return rules


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--history", type=int, default=24_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--rules", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    _reset(args.database_url)
    engine = create_db_engine(args.database_url)
    factory = make_sessionmaker(engine)
    settings = Settings(database_url=args.database_url)
    with session_scope(factory) as session:
        survey = Survey(slug="bench", title="Bench", questions={}, choices={}, status="open")
        book = Codebook(key="bench", name="Bench")
        session.add_all([survey, book])
        session.flush()
        version = CodebookVersion(
            codebook_id=book.id, number=1, content={"codes": []}, created_by="bench"
        )
        session.add(version)
        session.flush()
        survey_id, version_id = survey.id, version.id
        session.execute(insert(AlertRule), _rules(survey_id, args.rules))
    _stories(factory, survey_id, version_id, args.history, NOW - timedelta(days=365), 300)
    with session_scope(factory) as session:
        fold_and_evaluate(session, settings)

    timings: dict[bool, list[float]] = {False: [], True: []}
    fired = 0
    for round_ in range(args.rounds * 2):
        with_rules = round_ % 2 == 1
        with session_scope(factory) as session:
            session.execute(update(AlertRule).values(enabled=with_rules))
        _stories(factory, survey_id, version_id, args.batch, NOW - timedelta(days=60), 60)
        with session_scope(factory) as session:
            started = time.perf_counter()
            _folded, n = fold_and_evaluate(session, settings)
            timings[with_rules].append((time.perf_counter() - started) * 1000)
        fired += n
    base = statistics.median(timings[False])
    ruled = statistics.median(timings[True])
    per_rule = (ruled - base) / args.rules
    with session_scope(factory) as session:
        stories = session.scalar(select(Incident.id).order_by(Incident.id.desc()).limit(1))
    print(
        json.dumps(
            {
                "database": engine.dialect.name,
                "python": platform.python_version(),
                "stories": stories,
                "batch": args.batch,
                "rules": args.rules,
                "fold_ms_without_rules": round(base, 1),
                "fold_ms_with_rules": round(ruled, 1),
                "added_ms_per_rule": round(per_rule, 2),
                "alerts_fired": fired,
                "target_ms_per_rule": 50,
                "ok": per_rule < 50,
            },
            indent=2,
        )
    )
    engine.dispose()


if __name__ == "__main__":
    main()
