"""The report cache (app.reports.cache): after every kind of write that changes a report, the
cached answer is the bytes a fresh computation gives; it never crosses suppression flavours or
queries; it is bounded; and a repeat or an If-None-Match does not compute the report."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import date
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, text, update

from app.config import Settings
from app.erasure.service import erase_incident
from app.main import create_app
from app.models import CodebookVersion, Incident, IncidentCode
from app.reports import cache as report_cache
from app.reports import rollups
from app.reports.cache import Answer, ReportCache
from tests.reports.conftest import API, StorySpec

CODEBOOKS = "/api/v1/codebooks"
TOUCHPOINTS = ("Gate", "Lounge", "Desk")
CHANNELS = ("Phone", "In person")


def _specs(survey_id: int, n: int, *, codes: tuple[str, ...] = ("a",), day: int = 3) -> list:
    return [
        StorySpec(
            survey_id,
            date(2025, 1 + i % 5, day + i % 7),
            valence=("dissatisfying", "satisfying")[i % 2],
            codes=codes if i % 4 else (*codes, "b"),
            touchpoint=TOUCHPOINTS[i % 3],
            channel=CHANNELS[i % 2],
            segment=("gold", "blue")[i % 2],
        )
        for i in range(n)
    ]


@pytest.fixture
def fresh(settings: Settings, app: FastAPI) -> Iterator[TestClient]:
    """A second API process on the same database with the cache off: what a report is now."""
    uncached = create_app(settings.model_copy(update={"report_cache_mb": 0}))
    assert not uncached.state.report_cache.enabled
    with TestClient(uncached, base_url="http://testserver") as client:
        yield client
    uncached.state.engine.dispose()


@pytest.fixture
def study(
    client: TestClient,
    admin: dict[str, str],
    survey_id: int,
    add_stories: Callable[..., list[int]],
    db: Callable[[], Any],
) -> dict[str, Any]:
    """A codebook (created through the API: codes a, b, c) and 60 coded stories under it."""
    content = {
        "key": "cache-study",
        "name": "Cache study",
        "codes": [
            {"key": c, "label": f"Code {c}", "definition": f"Definition of {c}"}
            for c in ("a", "b", "c")
        ],
    }
    made = client.post(CODEBOOKS, json={"content": content, "change_note": ""}, headers=admin)
    assert made.status_code == 201, made.text
    codebook_id = made.json()["id"]
    version_id = _version_ids(db, codebook_id)[0]
    ids = add_stories(_specs(survey_id, 60), version_id)
    return {
        "survey_id": survey_id,
        "codebook_id": codebook_id,
        "version_id": version_id,
        "ids": ids,
    }


def _version_ids(db: Callable[[], Any], codebook_id: int) -> list[int]:
    with db() as session:
        return [
            int(v)
            for v in session.scalars(
                select(CodebookVersion.id)
                .where(CodebookVersion.codebook_id == codebook_id)
                .order_by(CodebookVersion.number)
            )
        ]


def _urls(study: dict[str, Any]) -> list[str]:
    """Report shapes whose answers the cache keeps: each asked by a viewer (suppressed) and by
    an admin exactly."""
    version, survey = study["version_id"], study["survey_id"]
    shapes = [
        "/trends?period=month",
        "/trends?period=month&group_by=touchpoint",
        "/trends?period=quarter&group_by=touchpoint,channel",
        "/trends?period=quarter&group_by=channel,segment",
        f"/trends?period=month&codebook_version_id={version}",
        "/trends?period=quarter&format=csv",
        "/crosstab?by=channel&period=quarter",
        f"/crosstab?by=touchpoint&period=all&codebook_version_id={version}",
        f"/bitner?survey_id={survey}&period=quarter",
        f"/cooccurrence?period=quarter&codebook_version_id={version}",
    ]
    return [f"{API}{s}" for s in shapes]


class Reader:
    """Reads every shape through the cached app (viewer and admin) and the uncached one."""

    def __init__(
        self, client: TestClient, fresh: TestClient, study: dict[str, Any], tokens: Any
    ) -> None:
        self.client, self.fresh, self.urls = client, fresh, _urls(study)
        self.viewer, self.admin = tokens("viewer"), tokens("admin")

    def requests(self) -> list[tuple[str, dict[str, str]]]:
        exact = [(u + ("&" if "?" in u else "?") + "suppress=false", self.admin) for u in self.urls]
        return [(u, self.viewer) for u in self.urls] + [(u, self.admin) for u in self.urls] + exact

    def cached(self) -> list[bytes]:
        bodies = []
        for url, headers in self.requests():
            response = self.client.get(url, headers=headers)
            assert response.status_code == 200, (url, response.text)
            bodies.append(response.content)
        return bodies

    def computed(self) -> list[bytes]:
        bodies = []
        for url, headers in self.requests():
            response = self.fresh.get(url, headers=headers)
            assert response.status_code == 200, (url, response.text)
            bodies.append(response.content)
        return bodies

    def check(self, before: list[bytes] | None = None) -> list[bytes]:
        """The cached answers equal fresh computations, twice (the second from the cache);
        with `before`, the write changed at least one of them (else the test could not fail)."""
        now = self.cached()
        assert self.cached() == now
        truth = self.computed()
        for (url, _), got, want in zip(self.requests(), now, truth, strict=True):
            assert got == want, url
        if before is not None:
            assert now != before, "the write changed no report: the test proves nothing"
        return now


@pytest.fixture
def reader(
    client: TestClient,
    fresh: TestClient,
    study: dict[str, Any],
    token_for: Callable[..., dict[str, str]],
) -> Reader:
    return Reader(client, fresh, study, token_for)


def _fold(db: Callable[[], Any]) -> int:
    with db() as session:
        return rollups.fold(session)


def test_new_stories_then_a_fold(
    reader: Reader,
    study: dict[str, Any],
    add_stories: Callable[..., list[int]],
    db: Callable[[], Any],
    app: FastAPI,
) -> None:
    assert _fold(db) > 0
    before = reader.check()
    assert app.state.report_cache.hits > 0
    # Submissions (pending deltas, no fold yet): exact as soon as they commit.
    add_stories(_specs(study["survey_id"], 9, codes=("c",), day=10), study["version_id"])
    pending = reader.check(before)
    assert _fold(db) > 0
    assert reader.check() == pending  # a fold moves deltas, the figures stay


def test_a_fold_then_as_many_new_deltas_as_before(
    reader: Reader,
    study: dict[str, Any],
    add_stories: Callable[..., list[int]],
    db: Callable[[], Any],
) -> None:
    """The same number of pending delta rows (on SQLite even the same highest id) with other
    stories in them: only the generation the fold raised tells the two states apart."""
    with db() as session:
        state = report_cache.input_state(session)
    before = reader.check()
    assert _fold(db) > 0
    add_stories(_specs(study["survey_id"], 60, codes=("c",), day=20), study["version_id"])
    with db() as session:
        after = report_cache.input_state(session)
    assert after[1:] == state[1:] or after[1] == state[1]  # the same pending count
    assert after[0] != state[0]
    reader.check(before)


def test_a_coding_confirmed_and_folded(
    reader: Reader,
    study: dict[str, Any],
    add_stories: Callable[..., list[int]],
    db: Callable[[], Any],
) -> None:
    open_ids = add_stories(
        [
            StorySpec(study["survey_id"], date(2025, 2, 11), touchpoint="Gate", channel="Phone")
            for _ in range(7)
        ],
        study["version_id"],
    )
    assert _fold(db) > 0
    before = reader.check()
    with db() as session:  # as the review step settles a story: final codes, status coded
        for incident_id in open_ids:
            session.add(
                IncidentCode(
                    incident_id=incident_id,
                    code="c",
                    codebook_version_id=study["version_id"],
                    source="review",
                    confirmed_by="coder-1",
                )
            )
        session.flush()
        session.execute(update(Incident).where(Incident.id.in_(open_ids)).values(status="coded"))
    confirmed = reader.check(before)
    assert _fold(db) > 0
    assert reader.check() == confirmed


def test_an_erasure(reader: Reader, study: dict[str, Any], db: Callable[[], Any]) -> None:
    assert _fold(db) > 0
    before = reader.check()
    with db() as session:
        for incident_id in study["ids"][:13]:
            erase_incident(session, incident_id, reason="asked by the respondent", actor=None)
    reader.check(before)
    assert _fold(db) > 0
    reader.check()


def test_codebook_rename_and_merge(
    reader: Reader,
    study: dict[str, Any],
    client: TestClient,
    admin: dict[str, str],
    db: Callable[[], Any],
) -> None:
    assert _fold(db) > 0
    before = reader.check()
    url = f"{CODEBOOKS}/{study['codebook_id']}/changes"
    rename = {"operations": [{"op": "rename", "from": "a", "to": "x"}], "change_note": "r"}
    assert client.post(url, json=rename, headers=admin).status_code == 200
    renamed = reader.check(before)
    merge = {"operations": [{"op": "merge", "from": ["b"], "into": "x"}], "change_note": "m"}
    response = client.post(url, json=merge, headers=admin)
    assert response.status_code == 200, response.text
    reader.check(renamed)
    assert _fold(db) > 0
    reader.check()


def test_a_codebook_version_written_in_place_raises_the_generation(
    reader: Reader, study: dict[str, Any], db: Callable[[], Any]
) -> None:
    """No delta row moves: a version's codes get a parent (roll-up rows under that version).
    The trigger on codebook_versions is what the key sees."""
    assert _fold(db) > 0
    with db() as session:
        generation = report_cache.input_state(session)[0]
    before = reader.check()
    with db() as session:
        version = session.get(CodebookVersion, study["version_id"])
        assert version is not None
        content = dict(version.content)
        content["codes"] = [
            {**c, "parent": "c"} if c["key"] in ("a", "b") else c for c in content["codes"]
        ]
        session.execute(
            update(CodebookVersion)
            .where(CodebookVersion.id == study["version_id"])
            .values(content=content)
        )
    with db() as session:
        assert report_cache.input_state(session)[0] != generation
    reader.check(before)


def test_a_submission_writes_no_generation_and_a_rebuild_raises_it(
    study: dict[str, Any], add_stories: Callable[..., list[int]], db: Callable[[], Any]
) -> None:
    """Issue 11: the story path appends delta rows and never touches the shared row."""
    with db() as session:
        generation, *pending = report_cache.input_state(session)
    add_stories(_specs(study["survey_id"], 3), study["version_id"])
    with db() as session:
        now, *pending_now = report_cache.input_state(session)
    assert now == generation and pending_now != pending
    with db() as session:
        rollups.rebuild(session)
    with db() as session:
        assert report_cache.input_state(session)[0] != generation
    assert _fold(db) == 0  # nothing pending: nothing written
    with db() as session:
        unchanged = report_cache.input_state(session)
    _fold(db)
    with db() as session:
        assert report_cache.input_state(session) == unchanged


def test_a_viewer_never_gets_the_exact_body(
    reader: Reader, study: dict[str, Any], client: TestClient, fresh: TestClient
) -> None:
    url = f"{API}/trends?period=month&group_by=touchpoint"
    # Small cells, so that suppression hides something.
    exact = client.get(url + "&suppress=false", headers=reader.admin)
    assert exact.status_code == 200 and exact.json()["query"]["suppression"] is False
    viewed = client.get(url, headers=reader.viewer)
    assert viewed.status_code == 200 and viewed.json()["query"]["suppression"] is True
    assert viewed.content != exact.content
    assert viewed.content == fresh.get(url, headers=reader.viewer).content
    assert any(r["suppressed"] for r in viewed.json()["rows"])
    refused = client.get(url + "&suppress=false", headers=reader.viewer)
    assert refused.status_code == 403
    # Nor through its ETag: a viewer holding the exact body's ETag gets the suppressed body.
    tagged = client.get(url, headers={**reader.viewer, "If-None-Match": exact.headers["etag"]})
    assert tagged.status_code == 200 and tagged.content == viewed.content


def test_different_queries_get_different_bodies(reader: Reader, app: FastAPI) -> None:
    bodies = reader.cached()
    shapes = len(reader.urls)
    viewed, admins, exact = bodies[:shapes], bodies[shapes : 2 * shapes], bodies[2 * shapes :]
    assert len(set(viewed)) == len(set(exact)) == shapes
    # A suppressed answer is the same for every role: one entry per shape and flavour.
    assert admins == viewed and len(app.state.report_cache) == 2 * shapes
    # From/to inside a period snap to it: one answer, one entry.
    client, viewer = reader.client, reader.viewer
    a = client.get(f"{API}/trends?period=quarter&from=2025-01-01&to=2025-06-30", headers=viewer)
    b = client.get(f"{API}/trends?period=quarter&from=2025-02-10&to=2025-05-01", headers=viewer)
    assert a.content == b.content and len(app.state.report_cache) == 2 * shapes + 1


def test_a_repeat_and_an_if_none_match_do_not_compute(
    reader: Reader, client: TestClient, monkeypatch: pytest.MonkeyPatch, app: FastAPI
) -> None:
    from app.reports import router, tables

    url = f"{API}/trends?period=quarter&group_by=touchpoint,channel"
    first = client.get(url, headers=reader.viewer)
    table = client.get(f"{API}/crosstab?by=channel", headers=reader.viewer)

    def no(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("computed again")

    monkeypatch.setattr(router, "trends_data", no)
    monkeypatch.setattr(tables, "trends_data", no)
    again = client.get(url, headers=reader.viewer)
    assert again.content == first.content and again.headers["etag"] == first.headers["etag"]
    tagged = client.get(url, headers={**reader.viewer, "If-None-Match": first.headers["etag"]})
    assert tagged.status_code == 304 and tagged.headers["etag"] == first.headers["etag"]
    assert client.get(f"{API}/crosstab?by=channel", headers=reader.viewer).content == table.content
    # Another caller with the same flavour shares the answer.
    other = reader.admin
    assert client.get(url, headers=other).content == first.content


def test_min_cell_is_part_of_the_answer(
    settings: Settings,
    app: FastAPI,
    study: dict[str, Any],
    token_for: Callable[..., dict[str, str]],
    client: TestClient,
) -> None:
    """CIT_MIN_CELL (the only suppression setting; per process) changes the body."""
    url = f"{API}/trends?period=month&group_by=touchpoint"
    viewer = token_for("viewer")
    low = client.get(url, headers=viewer)
    other = create_app(settings.model_copy(update={"min_cell": 2}))
    try:
        with TestClient(other, base_url="http://testserver") as second:
            two = second.get(url, headers=viewer)
    finally:
        other.state.engine.dispose()
    assert two.json()["query"]["min_cell"] == 2 and two.content != low.content


def test_the_cache_is_bounded() -> None:
    cache = ReportCache(max_bytes=100, max_entries=3)
    for n in range(5):
        cache.put(n, Answer(b"x" * 10, f'"{n}"', "application/json"))
    assert len(cache) == 3 and cache.get(0) is None and cache.get(4) is not None
    cache.get(2)  # used: kept over 3
    cache.put(5, Answer(b"y" * 70, '"5"', "application/json"))
    assert cache.get(2) is not None and cache.get(3) is None
    assert cache.size_bytes <= 100
    cache.put(6, Answer(b"z" * 101, '"6"', "application/json"))  # larger than the whole cache
    assert cache.get(6) is None and cache.size_bytes <= 100


def test_requests_missing_one_key_together_compute_it_once() -> None:
    """A fold moves every dashboard's key at once: the requests that miss the same key at the
    same moment wait for one computation instead of each running their own."""
    cache = ReportCache(max_bytes=1000, max_entries=10)
    calls: list[int] = []
    started = threading.Event()

    def compute() -> Answer:
        calls.append(1)
        started.set()
        time.sleep(0.3)
        return Answer(b"{}", f'"{len(calls)}"', "application/json")

    answers: list[Answer] = []
    threads = [
        threading.Thread(target=lambda: answers.append(cache.answer("k", compute)))
        for _ in range(6)
    ]
    threads[0].start()
    started.wait(5)
    for thread in threads[1:]:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(calls) == 1
    assert len(answers) == 6 and {a.etag for a in answers} == {'"1"'}
    assert cache.get("k") is not None  # kept for the next request


def test_a_failed_computation_leaves_the_waiting_requests_to_compute() -> None:
    cache = ReportCache(max_bytes=1000, max_entries=10)
    started, release = threading.Event(), threading.Event()

    def failing() -> Answer:
        started.set()
        release.wait(5)
        raise RuntimeError("the database went away")

    errors: list[BaseException] = []

    def first() -> None:
        try:
            cache.answer("k", failing)
        except RuntimeError as error:
            errors.append(error)

    leader = threading.Thread(target=first)
    leader.start()
    started.wait(5)
    got: list[Answer] = []
    follower = threading.Thread(
        target=lambda: got.append(
            cache.answer("k", lambda: Answer(b"[]", '"own"', "application/json"))
        )
    )
    follower.start()
    time.sleep(0.1)  # the follower waits for the leader's computation
    assert not got
    release.set()
    leader.join(10)
    follower.join(10)
    assert len(errors) == 1
    assert [a.etag for a in got] == ['"own"']  # it computed its own answer


def test_the_app_keeps_at_most_the_configured_entries(
    settings: Settings, app: FastAPI, token_for: Callable[..., dict[str, str]]
) -> None:
    small = create_app(settings.model_copy(update={"report_cache_entries": 2}))
    off = create_app(settings.model_copy(update={"report_cache_mb": 0}))
    viewer = token_for("viewer")
    try:
        for instance in (small, off):
            with TestClient(instance, base_url="http://testserver") as c:
                for period in ("month", "quarter", "all"):
                    assert c.get(f"{API}/crosstab?by=channel&period={period}", headers=viewer)
        assert len(small.state.report_cache) == 2
        assert len(off.state.report_cache) == 0
    finally:
        small.state.engine.dispose()
        off.state.engine.dispose()


def test_the_state_is_one_statement_on_a_missing_row(db: Callable[[], Any]) -> None:
    """A database whose generation row is gone (a test emptying every table) gets it back."""
    with db() as session:
        session.execute(text("DELETE FROM report_generation"))
    with db() as session:
        assert report_cache.input_state(session)[0] is None
        report_cache.bump(session)
    with db() as session:
        assert report_cache.input_state(session)[0] == 1
        assert session.scalar(select(CodebookVersion.id)) is None


def test_two_processes_each_with_its_cache_follow_one_write(
    settings: Settings,
    reader: Reader,
    study: dict[str, Any],
    add_stories: Callable[..., list[int]],
    db: Callable[[], Any],
) -> None:
    """The state lives in the database: a second API process's cache moves on too."""
    second = create_app(settings)
    try:
        with TestClient(second, base_url="http://testserver") as other:
            url = f"{API}/trends?period=quarter&group_by=touchpoint,channel"
            before = [c.get(url, headers=reader.viewer).content for c in (reader.client, other)]
            assert before[0] == before[1]
            add_stories(_specs(study["survey_id"], 8, codes=("c",), day=12), study["version_id"])
            assert _fold(db) > 0
            after = [c.get(url, headers=reader.viewer).content for c in (reader.client, other)]
            truth = reader.fresh.get(url, headers=reader.viewer).content
            assert after == [truth, truth] and truth != before[0]
            assert second.state.report_cache.hits == 0 and len(second.state.report_cache) == 2
    finally:
        second.state.engine.dispose()
