"""app.db.insert_rows: several rows in one INSERT that SQLAlchemy can cache (a multi-row
`insert().values(rows)` has no cache key and was compiled afresh on every coding), storing
exactly what the multi-row VALUES stored, in the same order, on the suite's database."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, Table, func, insert, select

from app.db import WriteBatch, insert_rows
from app.models import AuditEvent, WebhookEvent
from app.models.base import utcnow

AUDIT: Table = AuditEvent.__table__  # type: ignore[assignment]
EVENTS: Table = WebhookEvent.__table__  # type: ignore[assignment]


def _audit_rows(action: str, n: int) -> list[dict[str, Any]]:
    now = utcnow()
    return [
        {
            "at": now + timedelta(microseconds=i),
            "actor_id": None,
            "actor_name": f"coder-{i} — ünïcode",
            "action": action,
            "entity_type": "incident",
            "entity_id": str(100 + i),
            # None in a JSON column is JSON null, not SQL NULL, in both forms.
            "before": None if i % 2 else {"codes": ["complaint"], "n": i},
            "after": {"codes": [], "memo": None},
        }
        for i in range(n)
    ]


def _stored(conn: Any, action: str) -> list[tuple[Any, ...]]:
    return [
        tuple(row)
        for row in conn.execute(
            select(
                AUDIT.c.at,
                AUDIT.c.actor_id,
                AUDIT.c.actor_name,
                AUDIT.c.entity_id,
                AUDIT.c.before,
                AUDIT.c.after,
                AUDIT.c.before.is_(None),
            )
            .where(AUDIT.c.action == action)
            .order_by(AUDIT.c.id)
        )
    ]


@pytest.mark.parametrize("n", [1, 2, 5])
def test_rows_are_stored_as_a_multi_row_values_stores_them(engine: Engine, n: int) -> None:
    with engine.connect() as conn, conn.begin() as transaction:
        conn.execute(insert(AUDIT).values(_audit_rows("test.values", n)))
        conn.execute(insert_rows(AUDIT, _audit_rows("test.rows", n)))
        by_values, by_rows = _stored(conn, "test.values"), _stored(conn, "test.rows")
        assert len(by_rows) == n
        # Same values, and in the order given (the ids follow the rows).
        assert [r[2:] for r in by_rows] == [r[2:] for r in by_values]
        assert [r[0] - by_rows[0][0] for r in by_rows] == [
            timedelta(microseconds=i) for i in range(n)
        ]
        if n > 1:  # JSON null stored as such, not as SQL NULL
            assert by_rows[1][4] is None and by_rows[1][6] is False
        transaction.rollback()


def test_the_statement_has_a_cache_key_whatever_the_number_of_rows() -> None:
    for n in (1, 2, 3):
        rows = _audit_rows("test.key", n)
        assert insert_rows(AUDIT, rows)._generate_cache_key() is not None
        if n > 1:  # what it replaces: compiled on every call
            assert insert(AUDIT).values(rows)._generate_cache_key() is None
    one, other = _audit_rows("a", 2), _audit_rows("b", 2)
    assert (
        insert_rows(AUDIT, one)._generate_cache_key()
        == insert_rows(AUDIT, other)._generate_cache_key()
    )


def test_a_python_side_default_left_out_is_refused() -> None:
    rows = _audit_rows("test.default", 2)
    for row in rows:
        del row["at"]  # AuditEvent.at has default=utcnow: a VALUES would have called it
    with pytest.raises(ValueError, match="at"):
        insert_rows(AUDIT, rows)
    # insert().values([]) would have written one row of defaults.
    with pytest.raises(ValueError, match="no rows"):
        insert_rows(AUDIT, [])


def test_rows_written_as_a_cte_of_a_combined_batch(engine: Engine) -> None:
    # WriteBatch combines on PostgreSQL (data-modifying CTEs); one by one elsewhere.
    events = [
        {
            "event_type": "coding.saved",
            "survey_id": None,
            "story_id": None,
            "payload": {"story_id": i},
            "created_at": utcnow(),
            "dispatched_at": None,
        }
        for i in range(3)
    ]
    with engine.connect() as conn, conn.begin() as transaction:
        writes = WriteBatch(conn)
        writes.add(EVENTS, lambda: insert_rows(EVENTS, events))
        writes.add(AUDIT, lambda: insert_rows(AUDIT, _audit_rows("test.cte", 2)))
        writes.flush()
        payloads = conn.execute(
            select(EVENTS.c.payload)
            .where(EVENTS.c.event_type == "coding.saved")
            .order_by(EVENTS.c.id)
        ).scalars()
        assert list(payloads) == [{"story_id": i} for i in range(3)]
        count = conn.execute(
            select(func.count()).select_from(AUDIT).where(AUDIT.c.action == "test.cte")
        ).scalar_one()
        assert count == 2
        transaction.rollback()
