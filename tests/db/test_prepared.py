"""app.prepared: a statement run on the DBAPI cursor stores and returns exactly what
`Connection.execute` of the same statement does (on SQLite, where the intake uses it)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
import sqlalchemy.exc
from sqlalchemy import Engine, text

from app import migrate
from app.db import create_db_engine, make_sessionmaker, session_scope
from app.incidents import intake
from app.incidents.redaction import redaction_columns
from app.models.base import utcnow
from app.prepared import Prepared
from app.surveys import service as surveys
from app.surveys.schemas import SurveyCreate


@pytest.fixture(scope="module")
def sqlite_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    # Its own SQLite database, whichever database the suite runs on: the intake uses
    # Prepared on SQLite only (on PostgreSQL a dead connection must go through SQLAlchemy).
    url = f"sqlite:///{tmp_path_factory.mktemp('prepared') / 'prepared.db'}"
    migrate.upgrade(url)
    engine = create_db_engine(url)
    yield engine
    engine.dispose()


def _survey(engine: Engine, **fields: Any) -> int:
    data = {"title": "Prepared", "open": True, **fields}
    with session_scope(make_sessionmaker(engine)) as session:
        return surveys.create_survey(session, SurveyCreate.model_validate(data), None).id


def _values(survey_id: int, key: str, **changes: Any) -> dict[str, Any]:
    now = utcnow()
    answers = {
        "what_happened": "She rebooked me at once — no fee, and a seat by the window.",
        "circumstances": None,
        "outcome": "I fly with them since.",
        "occurred": "last May",
    }
    values: dict[str, Any] = {
        "survey_id": survey_id,
        "invitation_id": None,
        "submission_key": key,
        "occurred_text": answers["occurred"],
        "occurred_on": date(2026, 5, 1),
        "circumstances": answers["circumstances"],
        "what_happened": answers["what_happened"],
        "outcome": answers["outcome"],
        "valence": "satisfying",
        "touchpoint": "Check-in",
        "channel": None,
        "language": "en",
        "attributes": {"segment": "Gold", "nested": {"a": [1, 2.5, None]}},
        "submitted_at": now,
        "status": "new",
        "coders_required": None,
        "exclusion_reason": None,
        "finalized_at": None,
        "version": 1,
        "source": "form",
        "consent": "given",
        "import_id": None,
        "receipt_hash": None,
        "redacted_with": None,
        **redaction_columns(answers),
        "open_survey_id": survey_id,
        "open_at": now,
    }
    return values | changes


def _raw(engine: Engine, key: str) -> dict[str, Any]:
    # Each column as SQLite holds it (its storage class and its bytes), id aside.
    with engine.connect() as conn:
        columns = [row[1] for row in conn.exec_driver_sql("PRAGMA table_info(incidents)")]
        wanted = [c for c in columns if c not in ("id", "submission_key")]
        select = ", ".join(f"typeof({c}), quote({c})" for c in wanted)
        row = conn.execute(
            text(f"SELECT {select} FROM incidents WHERE submission_key = :k"), {"k": key}
        ).one()
    return dict(zip(wanted, zip(row[::2], row[1::2], strict=True), strict=True))


def test_the_intake_insert_stores_what_sqlalchemy_stores(sqlite_engine: Engine) -> None:
    engine = sqlite_engine
    survey_id = _survey(engine)
    statements = intake._Statements("sqlite")
    prepared = Prepared(statements.incident, engine.dialect)
    values = _values(survey_id, "via-sqlalchemy")
    with engine.begin() as conn:
        through_sqlalchemy = conn.execute(statements.incident, values).first()
        through_cursor = prepared.first(conn, values | {"submission_key": "via-cursor"})
    assert through_sqlalchemy is not None and through_cursor is not None
    assert _raw(engine, "via-cursor") == _raw(engine, "via-sqlalchemy")
    # RETURNING id, submitted_at, survey_id: processed the same (an aware datetime, ints).
    assert through_cursor[1] == through_sqlalchemy[1] == values["submitted_at"]
    assert type(through_cursor[1]) is type(through_sqlalchemy[1])
    assert through_cursor[0] == through_sqlalchemy[0] + 1
    assert through_cursor[2] == survey_id


def test_the_insert_on_a_closed_survey_returns_no_row(sqlite_engine: Engine) -> None:
    survey_id = _survey(sqlite_engine, open=False)
    prepared = Prepared(intake._Statements("sqlite").incident, sqlite_engine.dialect)
    with sqlite_engine.begin() as conn:
        assert prepared.first(conn, _values(survey_id, "closed")) is None


def test_database_errors_are_sqlalchemys(sqlite_engine: Engine) -> None:
    survey_id = _survey(sqlite_engine)
    prepared = Prepared(intake._Statements("sqlite").incident, sqlite_engine.dialect)
    values = _values(survey_id, "bad", what_happened=None)
    with pytest.raises(sqlalchemy.exc.IntegrityError) as raised, sqlite_engine.begin() as conn:
        prepared.first(conn, values)
    # The engine hides parameters: no answer of the respondent in the message (a log line).
    assert "NOT NULL" in str(raised.value)
    assert values["outcome"] not in str(raised.value)
    assert "hidden due to hide_parameters" in str(raised.value)


def test_a_paramstyle_with_names_is_refused() -> None:
    from sqlalchemy.dialects.postgresql import psycopg

    with pytest.raises(ValueError, match="positional"):
        Prepared(intake._Statements("postgresql").incident, psycopg.dialect())


def test_a_missing_value_is_an_error_not_a_null(sqlite_engine: Engine) -> None:
    prepared = Prepared(intake._Statements("sqlite").incident, sqlite_engine.dialect)
    values = _values(_survey(sqlite_engine), "missing")
    del values["valence"]
    with pytest.raises(KeyError, match="valence"):
        prepared.parameters(values)
