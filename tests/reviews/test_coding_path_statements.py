"""The coding path's statements, counted: `POST /api/v1/review/next` and `PUT
/api/v1/incidents/{id}/codings/me` are the hot path of issue 11 (bench/review_throughput.py),
where every statement is a round trip on PostgreSQL. A change that adds one fails here, so the
count cannot creep back; lower the pins when you remove one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import event, func, select, update

from app.codebooks.service import nlp_codebook_of, survey_version_ref
from app.models import ReportCodeDelta, ReportStoryDelta, Survey

# Statements the driver is sent per request (SQLite's BEGIN / BEGIN IMMEDIATE count: they go
# through the cursor; psycopg's BEGIN and both drivers' COMMIT do not). A single-coded story:
# hand-out and coding; a double-coded one: both coders' (the second settles the story).
PINNED = {
    "sqlite": {
        "single-coded": {"next": 8, "save": 11},
        "double-coded": {"next": 8, "save": 10, "next_second": 10, "save_second": 13},
    },
    "postgresql": {
        "single-coded": {"next": 5, "save": 6},
        "double-coded": {"next": 5, "save": 5, "next_second": 8, "save_second": 8},
    },
}


@contextmanager
def counted(app: FastAPI) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(" ".join(statement.split())[:120])

    engine = app.state.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


@pytest.mark.parametrize("double", [False, True], ids=["single-coded", "double-coded"])
def test_the_coding_path_runs_a_pinned_number_of_statements(
    app: FastAPI,
    client: Any,
    review: Any,
    person: Callable[..., Any],
    survey: Survey,
    make_story: Callable[..., int],
    db: Callable[[], Any],
    double: bool,
) -> None:
    if double:
        with db() as session:
            session.execute(
                update(Survey).where(Survey.id == survey.id).values(double_coding_share=100)
            )
    story = make_story(survey, certainty=0.3, suggested=("complaint",))
    coders = [person(), person()] if double else [person()]
    for who in coders:  # a first request writes the token's last use: not the hot path
        assert client.get("/api/v1/review/progress", headers=who.headers).status_code == 200
    with db() as session:  # nor is reading a codebook version this process has not parsed
        ref = survey_version_ref(session, survey.id)
        assert ref is not None
        nlp_codebook_of(session, ref)

    counts: dict[str, int] = {}
    listings: dict[str, list[str]] = {}
    for i, who in enumerate(coders):
        second = "_second" if i else ""
        with counted(app) as statements:
            handed = client.post("/api/v1/review/next", json={}, headers=who.headers)
        assert handed.status_code == 200, handed.text
        assert handed.json()["incident"]["id"] == story
        counts["next" + second], listings["next" + second] = len(statements), statements

        body = {"codes": [{"code": "complaint", "origin": "suggestion"}]}
        with counted(app) as statements:
            saved = client.put(
                f"/api/v1/incidents/{story}/codings/me",
                json=body,
                headers={**who.headers, "If-Match": handed.headers["ETag"]},
            )
        assert saved.status_code == 200, saved.text
        counts["save" + second], listings["save" + second] = len(statements), statements
    assert saved.json()["incident_status"] == "coded"
    # The writes sent together still count the story and its final code once in the report
    # rollups' deltas (their triggers read incidents and incident_codes).
    with db() as session:
        assert session.scalar(select(func.sum(ReportStoryDelta.confirmed))) == 1
        assert session.scalar(select(func.sum(ReportCodeDelta.n))) == 1
    kind = "double-coded" if double else "single-coded"
    assert counts == PINNED[app.state.engine.dialect.name][kind], "\n".join(
        f"{name}:\n  " + "\n  ".join(listing) for name, listing in listings.items()
    )
