"""Intake cost: microseconds per stored story through `receive_story` (check, INSERT ... SELECT
with its job, and with webhooks its outbox event; COMMIT), one story at a time on one thread, no
HTTP and no worker: the statement's own cost, without the noise of a loaded server.

    python -m bench.intake_cost                                     # SQLite (temporary file)
    python -m bench.intake_cost --database-url postgresql+psycopg://postgres@127.0.0.1:5432/x

To compare two versions of the code, run this file by path with the other version first on
PYTHONPATH (`PYTHONPATH=../old python bench/intake_cost.py`): it imports `app` from there.
The PostgreSQL database given is emptied (its public schema dropped): use a scratch database."""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from sqlalchemy import text

from app import migrate
from app.config import Settings
from app.db import create_db_engine, make_sessionmaker, session_scope
from app.incidents.intake import RulesCache, receive_story
from app.surveys import service as surveys
from app.surveys.schemas import SurveyCreate

STORY = {
    "what_happened": "The agent sent $2,000 instead of $200 and there was no undo button.",
    "valence": "dissatisfying",
    "circumstances": "Paying a bill at the branch.",
}


def measure(url: str, stories: int, rounds: int) -> dict[str, object]:
    if url.startswith("postgresql"):
        engine = create_db_engine(url)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()
    migrate.upgrade(url)
    settings = Settings(env="test", database_url=url, secret_key="bench-secret-key-0123456789")
    engine = create_db_engine(url)
    with session_scope(make_sessionmaker(engine)) as session:
        survey = surveys.create_survey(
            session, SurveyCreate.model_validate({"title": "Bench", "open": True}), None
        )
        slug = survey.slug
    cache = RulesCache()
    per_story: list[float] = []
    n = 0
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(stories):
            n += 1
            outcome = receive_story(
                engine, settings, cache, slug, STORY, True,
                submission_key=f"bench-intake-{n:08d}", invitation_token=None,
            )  # fmt: skip
            assert outcome.outcome == "stored", outcome
        per_story.append((time.perf_counter() - started) / stories * 1e6)
    engine.dispose()
    return {
        "database": "postgresql" if url.startswith("postgresql") else "sqlite",
        "stories": stories * rounds,
        "us_per_story_median": round(statistics.median(per_story), 1),
        "us_per_story_rounds": [round(x, 1) for x in per_story],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url")
    parser.add_argument("--stories", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    url = args.database_url or f"sqlite:///{Path(tempfile.mkdtemp()) / 'intake.db'}"
    print(json.dumps(measure(url, args.stories, args.rounds)))


if __name__ == "__main__":
    main()
