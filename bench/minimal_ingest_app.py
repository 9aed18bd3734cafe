"""The ingest benchmark's baseline: the least a FastAPI + SQLAlchemy Core service can do to take
a story, one INSERT of one row into the same database, committed before the answer.

It takes the same JSON body as `POST /api/v1/public/surveys/{slug}/incidents` (validated by a
pydantic model) and the same form fields as `POST /s/{slug}`, and answers 201 (JSON) or 303
(form), like the service. Served by uvicorn exactly as `cit serve` serves the service:

    CIT_DATABASE_URL=... uvicorn --factory bench.minimal_ingest_app:create --port 8201
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse
from pydantic import BaseModel
from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    insert,
)

metadata = MetaData()
stories = Table(
    "bench_minimal_stories",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("submission_key", String(64)),
    Column("what_happened", Text, nullable=False),
    Column("valence", String(16), nullable=False),
    Column("submitted_at", DateTime(timezone=True), nullable=False),
)


class Story(BaseModel):
    what_happened: str
    valence: str
    consent: bool = False
    submission_id: str | None = None


def create() -> FastAPI:
    url = os.environ["CIT_DATABASE_URL"]
    engine = create_engine(url, pool_size=20, max_overflow=0)
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    metadata.create_all(engine)
    app = FastAPI()

    def store(what_happened: str, valence: str, key: str | None) -> None:
        with engine.begin() as conn:
            conn.execute(
                insert(stories).values(
                    submission_key=key,
                    what_happened=what_happened,
                    valence=valence,
                    submitted_at=datetime.now(UTC),
                )
            )

    @app.post("/api/v1/public/surveys/{slug}/incidents", status_code=201)
    def submit_json(slug: str, story: Story) -> dict[str, str]:
        store(story.what_happened, story.valence, story.submission_id)
        return {"status": "received"}

    @app.post("/s/{slug}")
    async def submit_form(slug: str, request: Request) -> RedirectResponse:
        form = await request.form()
        from starlette.concurrency import run_in_threadpool

        await run_in_threadpool(
            store,
            str(form.get("what_happened", "")),
            str(form.get("valence", "")),
            str(form.get("submission_id", "")),
        )
        return RedirectResponse(f"/s/{slug}/thanks", status_code=303)

    return app
