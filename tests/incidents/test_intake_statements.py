"""What one submission sends to the database: on PostgreSQL a story without an invitation or a
contact is one statement in autocommit (no BEGIN/COMMIT round trips); with an invitation the
insert and the claim share one transaction. On SQLite each story is one write transaction
(BEGIN IMMEDIATE), its INSERTs on the DBAPI cursor (app.prepared)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select

from app.config import Settings
from app.incidents.intake import RulesCache, receive_story
from app.models import Incident, Job, Survey, WebhookEvent
from app.surveys.schemas import InvitationBatchCreate
from app.surveys.service import _invitation_token, create_invitations

STORY = {
    "what_happened": "They charged me twice for one ticket.",
    "valence": "dissatisfying",
    "circumstances": "Booking online.",
}


@pytest.fixture
def sent(engine: Engine) -> Iterator[list[tuple[str, bool | None]]]:
    """(statement, the DBAPI connection's autocommit on PostgreSQL) for each statement."""
    statements: list[tuple[str, bool | None]] = []

    def record(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        driver = conn.connection.driver_connection
        autocommit = driver.autocommit if conn.dialect.name == "postgresql" else None
        statements.append((statement, autocommit))

    event.listen(engine, "before_cursor_execute", record)
    yield statements
    event.remove(engine, "before_cursor_execute", record)


def _counts(db: Callable[[], Any]) -> tuple[int, int, int]:
    with db() as session:
        return (
            session.scalar(select(func.count()).select_from(Incident)),
            session.scalar(select(func.count()).select_from(Job)),
            session.scalar(select(func.count()).select_from(WebhookEvent)),
        )


def test_a_plain_story_is_one_statement_on_postgresql(
    engine: Engine,
    settings: Settings,
    make_survey: Callable[..., Survey],
    db: Callable[[], Any],
    sent: list[tuple[str, bool | None]],
) -> None:
    survey = make_survey()
    cache = RulesCache()
    receive_story(engine, settings, cache, survey.slug, STORY, True, submission_key="warm-1",
                  invitation_token=None)  # fmt: skip
    sent.clear()  # the survey's rules are cached now
    intake = receive_story(engine, settings, cache, survey.slug, STORY, True,
                           submission_key="plain-1", invitation_token=None)  # fmt: skip
    assert intake.outcome == "stored"
    assert _counts(db) == (2, 2, 2)  # each story with its suggestion job and its outbox event
    if engine.dialect.name == "postgresql":
        assert len(sent) == 1, sent
        statement, autocommit = sent[0]
        assert statement.lstrip().startswith("WITH new_incident AS")
        assert autocommit is True
    else:
        # One write transaction; the INSERTs bypass SQLAlchemy's execution (not seen here).
        assert sent == [("BEGIN IMMEDIATE", None)]


def test_a_story_with_an_invitation_is_one_transaction(
    engine: Engine,
    settings: Settings,
    make_survey: Callable[..., Survey],
    db: Callable[[], Any],
    sent: list[tuple[str, bool | None]],
) -> None:
    survey = make_survey()
    with db() as session:
        survey_row = session.get(Survey, survey.id)
        (invitation,) = create_invitations(
            session, survey_row, InvitationBatchCreate(count=1), settings, None
        )
        token = _invitation_token(settings.secret_key, invitation.nonce)
    intake = receive_story(engine, settings, RulesCache(), survey.slug, STORY, True,
                           submission_key="invited-1", invitation_token=token)  # fmt: skip
    assert intake.outcome == "stored"
    if engine.dialect.name == "postgresql":
        writes = [(s, a) for s, a in sent if not s.lstrip().upper().startswith("SELECT")]
        assert writes and all(autocommit is False for _s, autocommit in writes), writes
        assert any(s.lstrip().startswith("UPDATE invitations") for s, _a in writes)
    again = receive_story(engine, settings, RulesCache(), survey.slug, STORY, True,
                          submission_key="invited-2", invitation_token=token)  # fmt: skip
    assert again.outcome == "invitation_used"
    assert _counts(db)[0] == 1
