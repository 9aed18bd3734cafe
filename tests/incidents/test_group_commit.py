"""SQLite's group commit (app.incidents.intake.GroupCommit): submissions that arrive while
another is being written are stored together in one write transaction, each answered with its
own story, and a batch that fails leaves nothing of itself behind and every story is written
again alone.

Group commit is SQLite's (PostgreSQL stores each story alone, tests/incidents/
test_intake_statements.py), so these tests run on a SQLite database of their own in every
suite, the PostgreSQL one too."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine, event, func, select, text

from app import migrate
from app.config import Settings
from app.db import create_db_engine, make_sessionmaker, session_scope, write_engine
from app.incidents import intake
from app.incidents.intake import RulesCache, group_commit, receive_story
from app.incidents.service import Intake
from app.models import Incident, Job, WebhookEvent
from app.surveys import service as surveys
from app.surveys.schemas import InvitationBatchCreate, SurveyCreate
from app.surveys.service import _invitation_token, create_invitations
from tests.conftest import TEST_SECRET


@pytest.fixture(scope="module")
def sqlite_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path_factory.mktemp('group') / 'group.db'}"
    migrate.upgrade(url)
    engine = create_db_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def local(sqlite_engine: Engine, tmp_path: Path) -> Iterator[tuple[Engine, Settings, str]]:
    settings = Settings(
        env="test",
        database_url=str(sqlite_engine.url),
        secret_key=TEST_SECRET,
        data_dir=tmp_path / "data",
        gc_freeze=False,
    )
    with session_scope(make_sessionmaker(sqlite_engine)) as session:
        survey = surveys.create_survey(
            session, SurveyCreate.model_validate({"title": "Group", "open": True}), None
        )
        slug = survey.slug
    yield sqlite_engine, settings, slug
    with sqlite_engine.begin() as conn:
        for table in ("webhook_events", "jobs", "incidents", "invitations"):
            conn.execute(text(f"DELETE FROM {table}"))


@pytest.fixture
def begins(sqlite_engine: Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.startswith("BEGIN IMMEDIATE"):
            seen.append(statement)

    event.listen(sqlite_engine, "before_cursor_execute", record)
    yield seen
    event.remove(sqlite_engine, "before_cursor_execute", record)


def _story(text_: str) -> dict[str, Any]:
    return {"what_happened": text_, "valence": "dissatisfying", "circumstances": "At the desk."}


def _batches() -> tuple[float, float]:
    count = REGISTRY.get_sample_value("cit_intake_batch_stories_count") or 0.0
    total = REGISTRY.get_sample_value("cit_intake_batch_stories_sum") or 0.0
    return count, total


def _submit_behind_the_lock(
    engine: Engine,
    settings: Settings,
    slug: str,
    submissions: list[tuple[str, str | None, str | None]],
    begins: list[str] | None = None,
) -> list[Intake]:
    """Each (text, submission key, invitation token) from a thread of its own while this
    thread holds the write lock; the lock is let go once every one of them is queued.
    `begins` is emptied once the rules are cached (by a first story)."""
    cache = RulesCache()
    receive_story(engine, settings, cache, slug, _story("warm the rules"), True,
                  submission_key="warm", invitation_token=None)  # fmt: skip
    if begins is not None:
        begins.clear()
    results: list[Intake | None] = [None] * len(submissions)

    def submit(i: int) -> None:
        words, key, token = submissions[i]
        results[i] = receive_story(engine, settings, cache, slug, _story(words), True,
                                   submission_key=key, invitation_token=token)  # fmt: skip

    _behind_the_lock(engine, len(submissions), submit)
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


def _behind_the_lock(engine: Engine, count: int, submit: Callable[[int], None]) -> None:
    """`submit(i)` for each i < count, each from a thread of its own, while this thread holds
    the write lock; the lock is let go once all of them are queued, then they are waited for."""
    queue = group_commit(engine)._queue
    threads = [threading.Thread(target=submit, args=(i,)) for i in range(count)]
    with write_engine(engine).begin():  # the write lock: every submission queues behind it
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while len(queue) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(queue) == count
    for thread in threads:
        thread.join(timeout=30)


def _texts(engine: Engine) -> dict[int, str]:
    with engine.connect() as conn:
        rows = conn.execute(select(Incident.id, Incident.what_happened)).all()
    return {row.id: row.what_happened for row in rows}


def _count(engine: Engine, model: Any) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(model)) or 0)


def test_stories_queued_behind_the_write_lock_share_one_transaction(
    local: tuple[Engine, Settings, str], begins: list[str]
) -> None:
    engine, settings, slug = local
    submissions: list[tuple[str, str | None, str | None]] = [
        (f"story number {i}", f"key-{i}", None) for i in range(10)
    ]
    submissions += [("sent twice", "twice", None), ("sent twice", "twice", None)]
    batches_before, stories_before = _batches()
    results = _submit_behind_the_lock(engine, settings, slug, submissions, begins)

    # The holder's BEGIN IMMEDIATE, then one for the whole queue.
    assert len(begins) == 2, begins
    batches_after, stories_after = _batches()
    # The warm-up story alone, then the twelve together.
    assert (batches_after - batches_before, stories_after - stories_before) == (2, 13)
    texts = _texts(engine)
    for (words, _key, _token), result in zip(submissions[:10], results[:10], strict=True):
        assert result.outcome == "stored"
        assert result.incident_id is not None and texts[result.incident_id] == words
    twice = results[10:]
    assert sorted(r.outcome for r in twice) == ["duplicate", "stored"]
    assert twice[0].incident_id == twice[1].incident_id
    assert twice[0].receipt == twice[1].receipt
    # The warm-up story, ten, and the one sent twice: each with its job and outbox event.
    assert _count(engine, Incident) == _count(engine, Job) == _count(engine, WebhookEvent) == 12


def test_one_invitation_twice_in_a_batch_is_stored_once(
    local: tuple[Engine, Settings, str],
) -> None:
    engine, settings, slug = local
    with session_scope(make_sessionmaker(engine)) as session:
        survey = surveys.find_by_slug(session, slug)
        assert survey is not None
        (invitation,) = create_invitations(
            session, survey, InvitationBatchCreate(count=1), settings, None
        )
        token = _invitation_token(settings.secret_key, invitation.nonce)
    results = _submit_behind_the_lock(
        engine,
        settings,
        slug,
        [
            ("invited, first tab", "tab-1", token),
            ("invited, second tab", "tab-2", token),
            ("not invited", "plain", None),
        ],
    )
    assert sorted(r.outcome for r in results[:2]) == ["invitation_used", "stored"]
    assert results[2].outcome == "stored"
    assert _count(engine, Incident) == 3  # the warm-up, one invited story, the plain one


def test_a_failed_batch_leaves_nothing_and_each_story_is_written_alone(
    local: tuple[Engine, Settings, str], begins: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, settings, slug = local
    real = intake.insert_story

    def refusing(conn: Any, survey: Any, story: Any, **kwargs: Any) -> Any:
        # Fault injection: this story's transaction must roll back after its INSERTs (as a
        # lost invitation claim does), taking the batch's other stories with it.
        stored = real(conn, survey, story, **kwargs)
        if story.answers["what_happened"] == "refused story":
            raise intake._Rollback("invitation_used")
        return stored

    monkeypatch.setattr(intake, "insert_story", refusing)
    submissions: list[tuple[str, str | None, str | None]] = [
        (f"story {i}", f"k-{i}", None) for i in range(5)
    ]
    submissions.insert(2, ("refused story", "refused", None))
    results = _submit_behind_the_lock(engine, settings, slug, submissions, begins)

    # The holder's, the batch's (rolled back), then each of the six alone.
    assert len(begins) == 1 + 1 + 6, begins
    outcomes = [r.outcome for r in results]
    assert outcomes == ["stored", "stored", "invitation_used", "stored", "stored", "stored"]
    texts = _texts(engine)
    assert "refused story" not in texts.values()
    for (words, _key, _token), result in zip(submissions, results, strict=True):
        if result.outcome == "stored":
            assert result.incident_id is not None and texts[result.incident_id] == words
    assert _count(engine, Incident) == _count(engine, Job) == _count(engine, WebhookEvent) == 6


def test_a_story_alone_is_written_at_once(
    local: tuple[Engine, Settings, str], begins: list[str]
) -> None:
    engine, settings, slug = local
    cache = RulesCache()
    begins.clear()
    for i in range(3):
        result = receive_story(engine, settings, cache, slug, _story(f"alone {i}"), True,
                               submission_key=f"alone-{i}", invitation_token=None)  # fmt: skip
        assert result.outcome == "stored"
    assert len(begins) == 3  # one transaction each: nothing waits to gather a batch
    assert not group_commit(engine)._queue


def test_a_database_error_reaches_every_story_of_the_batch(
    local: tuple[Engine, Settings, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch whose stories all fail alone too (the database refuses them) answers each with
    the error, stores nothing, and leaves the queue empty for the next submission."""
    engine, settings, slug = local
    real = intake.insert_story

    def broken(conn: Any, survey: Any, story: Any, **kwargs: Any) -> Any:
        if story.answers["what_happened"].startswith("broken"):
            conn.exec_driver_sql("INSERT INTO no_such_table VALUES (1)")
        return real(conn, survey, story, **kwargs)

    monkeypatch.setattr(intake, "insert_story", broken)
    errors: list[BaseException] = []
    cache = RulesCache()
    receive_story(engine, settings, cache, slug, _story("warm"), True,
                  submission_key="warm-2", invitation_token=None)  # fmt: skip

    def submit(i: int) -> None:
        try:
            receive_story(engine, settings, cache, slug, _story(f"broken {i}"), True,
                          submission_key=f"broken-{i}", invitation_token=None)  # fmt: skip
        except Exception as error:  # the test collects what each one got
            errors.append(error)

    _behind_the_lock(engine, 4, submit)
    assert len(errors) == 4 and all("no_such_table" in str(e) for e in errors)
    assert _count(engine, Incident) == 1  # the warm-up only
    assert not group_commit(engine)._queue
    after = receive_story(engine, settings, cache, slug, _story("after"), True,
                          submission_key="after", invitation_token=None)  # fmt: skip
    assert after.outcome == "stored"


def test_a_write_lock_held_elsewhere_fails_the_queue_together(
    local: tuple[Engine, Settings, str],
) -> None:
    """Another process holds SQLite's write lock past the busy timeout: the front of the queue
    fails with the database's error, and so does everyone queued behind it by then, at the same
    time (not each after a busy timeout of its own, one after the other)."""
    engine, settings, slug = local
    timeout = 2.0
    impatient = create_db_engine(str(engine.url), pool_size=8, lock_timeout_seconds=timeout)
    cache = RulesCache()
    receive_story(impatient, settings, cache, slug, _story("warm"), True,
                  submission_key="warm-3", invitation_token=None)  # fmt: skip
    errors: list[BaseException] = []

    def submit(i: int) -> None:
        try:
            receive_story(impatient, settings, cache, slug, _story(f"late {i}"), True,
                          submission_key=f"late-{i}", invitation_token=None)  # fmt: skip
        except Exception as error:  # the test collects what each one got
            errors.append(error)

    other = sqlite3.connect(engine.url.database or "", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process's write transaction
        began = time.monotonic()
        threads = [threading.Thread(target=submit, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
            time.sleep(0.05)  # each queues while the first waits for the lock
        for thread in threads:
            thread.join(timeout=30)
        took = time.monotonic() - began
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert len(errors) == 4 and all("locked" in str(e) for e in errors), errors
    # One busy timeout for all; the queue failing one batch after another took two or more.
    assert took < 1.6 * timeout, took
    assert not group_commit(impatient)._queue
    impatient.dispose()
