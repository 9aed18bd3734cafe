"""Concurrent submissions queue for the write lock instead of failing (SQLite WAL + busy
timeout + BEGIN IMMEDIATE; row locks on PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import FastAPI
from sqlalchemy import func, select

from app.db import session_scope
from app.incidents.intake import store_story
from app.incidents.service import CleanStory
from app.models import Incident, Survey


def test_parallel_submissions_all_stored(
    app: FastAPI, make_survey: Callable[..., Survey], db: Callable[[], Any]
) -> None:
    survey_id = make_survey().id
    story = CleanStory(
        {
            "occurred": None,
            "circumstances": "c",
            "what_happened": "w",
            "outcome": "o",
            "valence": "satisfying",
            "touchpoint": None,
            "channel": None,
        },
        None,
    )

    def submit(i: int) -> str:
        with session_scope(app.state.sessionmaker) as session:
            survey = session.get(Survey, survey_id)
            assert survey is not None
            # Read first, write later: the pattern that fails under deferred SQLite transactions.
            session.scalar(select(func.count()).select_from(Incident))
            return store_story(
                session, survey, story, submission_key=f"parallel-{i % 30}", invitation_token=None
            ).outcome

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(submit, range(60)))

    assert outcomes.count("stored") == 30 and outcomes.count("duplicate") == 30
    with db() as session:
        assert session.scalar(select(func.count()).select_from(Incident)) == 30
