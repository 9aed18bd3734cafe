"""The coding benchmark's baseline: the least a FastAPI + SQLAlchemy Core service does to hand
out the next story and save a coding, on the service's own tables.

- `POST /api/v1/review/next`: the oldest story waiting to be coded and not leased (one SELECT
  ... ORDER BY submitted_at LIMIT 1, FOR UPDATE SKIP LOCKED on PostgreSQL) and one INSERT of a
  lease row (a table of its own);
- `PUT /api/v1/incidents/{id}/codings/me`: one INSERT of the coding and one UPDATE of the story's
  status. Served by uvicorn like `cit serve`.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Response
from sqlalchemy import create_engine, event, text


def create() -> FastAPI:
    url = os.environ["CIT_DATABASE_URL"]
    postgres = url.startswith("postgresql")
    # SQLite as the service runs it: a busy timeout, and writers that take the write lock
    # first (BEGIN IMMEDIATE) instead of failing when they upgrade a read.
    connect_args = {} if postgres else {"timeout": 15, "isolation_level": None}
    engine = create_engine(url, pool_size=20, max_overflow=0, connect_args=connect_args)
    if not postgres:

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    with engine.begin() as conn:
        if not postgres:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        conn.execute(
            text(
                "CREATE TABLE IF NOT EXISTS bench_leases (incident_id INTEGER PRIMARY KEY, "
                "coder TEXT, at TIMESTAMP)"
            )
        )
        conn.execute(
            text(
                "CREATE TABLE IF NOT EXISTS bench_codings (incident_id INTEGER, coder TEXT, "
                "codes TEXT, at TIMESTAMP)"
            )
        )
    # The same partial index of open stories the service's queue walks (on SQLite named, as
    # the service names it: the planner would rather sort the rows of a status index).
    lock = " FOR UPDATE OF i SKIP LOCKED" if postgres else ""
    hint = "" if postgres else " INDEXED BY ix_incidents_open_by_date"
    pick = text(
        f"SELECT i.id, i.redacted FROM incidents i{hint} "
        "WHERE i.status IN ('new', 'in_review') AND NOT EXISTS "
        "(SELECT 1 FROM bench_leases l WHERE l.incident_id = i.id) "
        f"ORDER BY i.submitted_at, i.id LIMIT 1{lock}"
    )
    app = FastAPI()

    @app.post("/api/v1/review/next")
    def next_story(response: Response) -> dict[str, Any]:
        with engine.begin() as conn:
            row = conn.execute(pick).first()
            if row is None:
                return {"incident": None}
            conn.execute(
                text("INSERT INTO bench_leases VALUES (:id, 'coder', :at)"),
                {"id": row.id, "at": datetime.now(UTC)},
            )
        response.headers["ETag"] = '"1"'
        return {"incident": {"id": row.id, "redacted": row.redacted}}

    @app.put("/api/v1/incidents/{incident_id}/codings/me")
    def save(incident_id: int, body: dict[str, Any]) -> dict[str, Any]:
        with engine.begin() as conn:
            conn.execute(
                text("INSERT INTO bench_codings VALUES (:id, 'coder', :codes, :at)"),
                {"id": incident_id, "codes": str(body.get("codes")), "at": datetime.now(UTC)},
            )
            conn.execute(
                text("UPDATE incidents SET status = 'coded' WHERE id = :id"), {"id": incident_id}
            )
        return {"incident_id": incident_id, "status": "coded"}

    return app
