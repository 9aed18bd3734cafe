"""Suggestion throughput through the service's worker path against raw `nlp.pipe`, same run.

The worker path is what production does per batch: claim jobs in the database, load the stories
and their redacted text, run the codebook pipeline, locate evidence in each answer field, replace
the stories' suggestion rows, and delete the finished jobs. The raw side pipes the same composed
texts through the same spaCy pipeline object and only consumes the docs.

    python -m bench.worker_throughput [--stories 10000] [--repeat 3] [--database-url URL]

SQLite (a temporary file) by default; pass a PostgreSQL URL to measure there (its public
schema is dropped and recreated: use a scratch database)."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from sqlalchemy import delete, func, insert, select, text

import nlp
from app import migrate
from app.codebooks.service import ensure_default_codebook
from app.config import Settings
from app.db import create_db_engine, make_sessionmaker, session_scope
from app.incidents.redaction import redacted_answers, redaction_columns
from app.models import Incident, Job, Suggestion, Survey
from app.suggestions.queue import enqueue_suggestions
from app.suggestions.service import scoring_context
from app.suggestions.worker import Worker
from bench._data import load_stories
from bench.suggest_throughput import pin_to_one_core

ROOT = Path(__file__).resolve().parent.parent


def prepare(url: str, n: int) -> tuple[Settings, list[int]]:
    if url.startswith("postgresql"):
        engine = create_db_engine(url)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public"))
        engine.dispose()
    migrate.upgrade(url)
    settings = Settings(env="test", database_url=url, secret_key="bench-secret-key-0123456789")
    factory = make_sessionmaker(create_db_engine(url))
    with session_scope(factory) as session:
        ensure_default_codebook(session, ROOT / "codebooks" / "cit-service-encounters.yaml")
        survey = Survey(
            slug="bench",
            title="bench",
            introduction="",
            language="en",
            questions={},
            choices={},
            status="open",
            codebook_id=ensure_default_codebook(
                session, ROOT / "codebooks" / "cit-service-encounters.yaml"
            ).codebook_id,
        )
        session.add(survey)
        session.flush()
        rows = []
        for i, story in enumerate(load_stories(n)):
            answers = {
                "occurred": None,
                "circumstances": None,
                "what_happened": story,
                "outcome": None,
            }
            rows.append(
                {
                    "survey_id": survey.id,
                    "submission_key": f"bench-{i}",
                    "what_happened": story,
                    "valence": "dissatisfying",
                    "language": "en",
                    "attributes": {},
                    **redaction_columns(answers),
                }
            )
        for start in range(0, len(rows), 2000):
            session.execute(insert(Incident), rows[start : start + 2000])
        ids = list(session.scalars(select(Incident.id).order_by(Incident.id)))
    return settings, ids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stories", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database-url", default=None)
    parser.add_argument(
        "--batch-size", type=int, default=Settings.model_fields["worker_batch_size"].default
    )
    args = parser.parse_args(argv)
    core = pin_to_one_core()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{tmp}/bench.db"
        settings, ids = prepare(url, args.stories)
        factory = make_sessionmaker(create_db_engine(url))
        worker = Worker(
            factory,
            settings.model_copy(update={"worker_batch_size": args.batch_size}),
            name="bench",
        )
        with session_scope(factory, write=False) as session:
            from app.models import Codebook

            codebook = session.scalars(select(Codebook)).one()
            suggester = scoring_context(session, codebook, worker.cache).suggester
            texts = [
                nlp.compose_story(redacted_answers(i)).text
                for i in session.scalars(select(Incident).order_by(Incident.id))
            ]

        raw_times, worker_times = [], []
        for _ in range(args.repeat):
            started = time.perf_counter()
            for _doc in suggester.nlp.pipe(texts, batch_size=args.batch_size):
                pass
            raw_times.append(time.perf_counter() - started)

            with session_scope(factory) as session:
                session.execute(delete(Suggestion))
                enqueue_suggestions(session, ids)
            started = time.perf_counter()
            result = worker.drain()
            worker_times.append(time.perf_counter() - started)
            assert result.done == len(ids) and result.failed == 0, result
            with session_scope(factory, write=False) as session:
                assert session.scalar(select(func.count()).select_from(Job)) == 0
                scored = session.scalar(select(func.count()).select_from(Suggestion))
                assert scored == len(ids), scored

    raw, work = min(raw_times), min(worker_times)
    n = len(texts)
    database = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
    print(f"stories: {n}  database: {database}  cpu: {core}  repeats: {args.repeat} (best)")
    print(
        f"raw nlp.pipe      {n / raw:9.0f} stories/s  ({raw:.2f} s; median "
        f"{statistics.median(raw_times):.2f} s)"
    )
    print(
        f"worker path       {n / work:9.0f} stories/s  ({work:.2f} s; median "
        f"{statistics.median(worker_times):.2f} s)"
    )
    print(f"ratio worker/raw  {raw / work:9.2f}  (target >= 0.8)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
