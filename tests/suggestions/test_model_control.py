"""Training reports honest figures; models are listed, activated, rolled back and gated."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import delete, select, update
from typer.testing import CliRunner

from app.config import Settings, get_settings
from app.imports.service import ImportOptions, import_file
from app.models import (
    AuditEvent,
    Codebook,
    CodebookVersion,
    Coding,
    CodingCode,
    Incident,
    IncidentCode,
    NlpModel,
    Survey,
    User,
)
from app.suggestions import service
from app.suggestions.worker import Worker
from tests.suggestions.test_import_and_train import _study_file

CODES = ["complaint", "special_request", "extra_mile", "owner_error"]


def _imported(app: FastAPI, settings: Settings, survey: Survey, tmp_path: Path) -> int:
    report = import_file(
        app.state.sessionmaker,
        _study_file(tmp_path),
        survey.id,
        settings,
        ImportOptions(),
        imported_by="import",
    )
    assert report.ok
    return report.stored


def _train(db: Callable[[], Any], settings: Settings, codebook_id: int) -> int:
    with db() as session:
        codebook = session.get(Codebook, codebook_id)
        return service.train_model(session, codebook, settings, "tester").id


def _actions(db: Callable[[], Any]) -> list[tuple[str, Any, Any]]:
    with db() as session:
        return [
            (e.action, e.before, e.after)
            for e in session.scalars(
                select(AuditEvent).where(AuditEvent.action.like("nlp.%")).order_by(AuditEvent.id)
            )
        ]


def test_figures_activation_and_roll_back(
    app: FastAPI,
    client: TestClient,
    settings: Settings,
    make_survey: Callable[..., Survey],
    codebook_id: int,
    worker: Worker,
    admin: dict[str, str],
    db: Callable[[], Any],
    tmp_path: Path,
    token_for: Callable[..., dict[str, str]],
) -> None:
    survey = make_survey()
    stored = _imported(app, settings, survey, tmp_path)
    first = _train(db, settings, codebook_id)
    researcher = token_for("researcher")
    (model,) = client.get("/api/v1/nlp/models", headers=researcher).json()
    assert (model["id"], model["active"], model["n_examples"], model["folds"]) == (
        first,
        True,
        stored,
        5,
    )
    assert [c["code"] for c in model["codes"]] == CODES
    for figures in model["codes"]:
        assert (figures["support"], figures["negatives"]) == (16, 48)
        assert figures["tp"] + figures["fn"] == 16 and figures["fp"] + figures["tn"] == 48
        assert set(figures["candidates"]) == {"rules", "model", "combined"}
        chosen = figures["candidates"][figures["layer"]]
        assert figures["kappa"] == chosen["kappa"] and figures["f1"] == chosen["f1"]
        assert figures["reason"] and not figures["no_support"]
        rules = figures["candidates"]["rules"]["kappa"] or 0.0
        assert (figures["kappa"] or 0.0) >= rules  # never below the rules on the same folds
    macro = model["macro"]["selected"]
    assert macro["n_codes"] == 4 and macro["codes_without_support"] == []
    assert model["activation"]["automatic"] is True
    assert client.get(f"/api/v1/nlp/models/{first}", headers=researcher).json()["id"] == first

    # Automatic activation off: the next model is stored, not used.
    response = client.patch(
        f"/api/v1/nlp/codebooks/{codebook_id}", headers=admin, json={"auto_activate": False}
    )
    assert response.json() == {
        "codebook_id": codebook_id,
        "auto_activate": False,
        "active_model_id": first,
    }
    second = _train(db, settings, codebook_id)
    read = client.get(f"/api/v1/nlp/models/{second}", headers=researcher).json()
    assert read["active"] is False
    assert read["activation"] == {
        "automatic": False,
        "reason": "automatic activation is off for this codebook",
    }

    # By hand: the new one, then back to the rules, then the earlier one again.
    assert client.post(f"/api/v1/nlp/models/{second}/activate", headers=admin).json()["active"]
    assert not client.get(f"/api/v1/nlp/models/{first}", headers=researcher).json()["active"]
    again = client.post(f"/api/v1/nlp/models/{second}/activate", headers=admin)
    assert again.status_code == 409
    assert again.headers["content-type"].startswith("application/problem+json")
    assert client.post(f"/api/v1/nlp/models/{second}/deactivate", headers=admin).status_code == 200
    assert client.post(f"/api/v1/nlp/models/{second}/deactivate", headers=admin).status_code == 409
    assert client.post("/api/v1/nlp/models/999999/activate", headers=admin).status_code == 404
    assert (
        client.post(f"/api/v1/nlp/models/{first}/activate", headers=researcher).status_code == 403
    )

    # Back on rules, stories not yet coded are re-scored by the rules.
    client.post(
        f"/api/v1/public/surveys/{survey.slug}/incidents",
        json={"what_happened": "They lost my bag and I want a refund.", "valence": "dissatisfying"},
    )
    worker.drain()
    items = client.get("/api/v1/incidents?limit=500", headers=admin).json()["items"]
    fresh = next(i for i in items if not i["final_codes"])
    assert {s["source"] for s in fresh["suggestions"]} == {"rules"}
    assert {s["model_id"] for s in fresh["suggestions"]} == {None}
    assert client.post(f"/api/v1/nlp/models/{first}/activate", headers=admin).status_code == 200
    worker.drain()
    items = client.get("/api/v1/incidents?limit=500", headers=admin).json()["items"]
    fresh = next(i for i in items if not i["final_codes"])
    assert {s["model_id"] for s in fresh["suggestions"]} == {first}

    actions = _actions(db)
    assert [a for a, _, _ in actions] == [
        "nlp.model.train",
        "nlp.model.activate",
        "nlp.auto_activate",
        "nlp.model.train",
        "nlp.model.activate",
        "nlp.model.deactivate",
        "nlp.model.activate",
    ]
    assert actions[1][1:] == ({"model_id": None}, {"model_id": first, "automatic": True})
    assert actions[5][1:] == ({"model_id": second}, {"model_id": None, "automatic": False})
    assert actions[6][1:] == ({"model_id": None}, {"model_id": first, "automatic": False})


def test_a_run_worse_than_the_layer_in_use_stays_inactive(
    app: FastAPI,
    settings: Settings,
    make_survey: Callable[..., Survey],
    codebook_id: int,
    db: Callable[[], Any],
    tmp_path: Path,
) -> None:
    _imported(app, settings, make_survey(), tmp_path)
    first = _train(db, settings, codebook_id)
    with db() as session:
        model = session.get(NlpModel, first)
        metrics = json.loads(json.dumps(model.metrics))
        complaint = next(c for c in metrics["evaluation"]["codes"] if c["code"] == "complaint")
        complaint["layer"], complaint["kappa"] = "model", 1.01  # a layer in use nothing can beat
        model.metrics = metrics
    second = _train(db, settings, codebook_id)
    with db() as session:
        assert session.get(NlpModel, first).active is True
        kept = session.get(NlpModel, second)
        assert kept.active is False
        reason = kept.metrics["activation"]["reason"]
        assert reason.startswith("kept the layers in use: complaint: cross-validated kappa")
        assert "1.010 of the layer in use" in reason


def test_everything_coders_decided_is_training_data(
    app: FastAPI,
    settings: Settings,
    make_survey: Callable[..., Survey],
    codebook_id: int,
    db: Callable[[], Any],
    tmp_path: Path,
    token_for: Callable[..., dict[str, str]],
) -> None:
    survey = make_survey()
    _imported(app, settings, survey, tmp_path)
    token_for("researcher", name="ann")
    token_for("researcher", name="bob")
    with db() as session:
        ids = list(session.scalars(select(Incident.id).order_by(Incident.id)))
        version = session.scalars(select(CodebookVersion)).first()
        users = {u.name: u.id for u in session.scalars(select(User))}
        # An excluded story, and two stories still in review with one coder's decisions.
        lonely, review, disputed = ids[-3:]
        session.execute(
            update(Incident)
            .where(Incident.id.in_([lonely, review, disputed]))
            .values(status="in_review")
        )
        session.execute(
            delete(IncidentCode).where(IncidentCode.incident_id.in_([lonely, review, disputed]))
        )
        session.execute(update(Incident).where(Incident.id == lonely).values(status="excluded"))
        for incident_id, coder, decisions in (
            (review, "ann", [("complaint", "added"), ("extra_mile", "rejected")]),
            (disputed, "ann", [("complaint", "accepted")]),
            (disputed, "bob", [("complaint", "rejected"), ("owner_error", "added")]),
        ):
            coding = Coding(
                incident_id=incident_id, coder_id=users[coder], codebook_version_id=version.id
            )
            session.add(coding)
            session.flush()
            for code, decision in decisions:
                session.add(CodingCode(coding_id=coding.id, code=code, decision=decision))
    with db() as session:
        stories = service.training_stories(session, session.get(Codebook, codebook_id))
        assert service.count_confirmed(session, session.get(Codebook, codebook_id)) == len(ids) - 2
    final = [s for s in stories if s.final]
    assert len(final) == len(ids) - 2
    excluded = [s for s in final if s.excluded]
    assert len(excluded) == 1 and dict(excluded[0].labels) == dict.fromkeys(CODES, False)
    partial = {s.text: s for s in stories if not s.final}
    assert len(partial) == 2
    found = {(frozenset(s.labels.items()), s.excluded) for s in partial.values()}
    assert found == {
        (frozenset({("complaint", True), ("extra_mile", False)}), False),
        # The two coders contradict each other on complaint: unknown, not a label.
        (frozenset({("owner_error", True)}), False),
    }
    assert all(s.valence in ("satisfying", "dissatisfying") for s in stories)


def test_cli_train_models_activate_deactivate(
    app: FastAPI,
    settings: Settings,
    make_survey: Callable[..., Survey],
    codebook_id: int,
    db: Callable[[], Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.cli import cli

    _imported(app, settings, make_survey(), tmp_path)
    monkeypatch.setenv("CIT_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("CIT_DATA_DIR", str(tmp_path / "cli-data"))
    get_settings.cache_clear()
    runner = CliRunner()
    try:
        trained = runner.invoke(cli, ["nlp", "train"])
        assert trained.exit_code == 0, trained.output
        assert "5-fold cross-validation on 64 confirmed stories" in trained.output
        assert "macro selected" in trained.output and "<- active" in trained.output
        with db() as session:
            model_id = session.scalars(select(NlpModel.id)).one()
        assert f"model {model_id} active" in trained.output
        listed = runner.invoke(cli, ["nlp", "models"])
        assert listed.exit_code == 0, listed.output
        (line,) = [line for line in listed.output.splitlines() if line.startswith("*")]
        assert line.split()[1] == str(model_id) and "complaint=" in line
        off = runner.invoke(cli, ["nlp", "auto-activate", "off"])
        assert off.exit_code == 0 and "automatic activation off" in off.output
        down = runner.invoke(cli, ["nlp", "deactivate"])
        assert down.exit_code == 0 and "the rules suggest" in down.output
        again = runner.invoke(cli, ["nlp", "deactivate"])
        assert again.exit_code != 0 and "no model is active" in again.output
        up = runner.invoke(cli, ["nlp", "activate", str(model_id)])
        assert up.exit_code == 0, up.output
        missing = runner.invoke(cli, ["nlp", "activate", "424242"])
        assert missing.exit_code != 0 and "does not exist" in missing.output
    finally:
        get_settings.cache_clear()
    with db() as session:
        assert session.get(NlpModel, model_id).active is True
        assert session.get(Codebook, codebook_id).auto_activate is False
    assert [a for a, _, _ in _actions(db)] == [
        "nlp.model.train",
        "nlp.model.activate",
        "nlp.auto_activate",
        "nlp.model.deactivate",
        "nlp.model.activate",
    ]


def test_agreement_report_names_what_made_the_compared_suggestions(
    app: FastAPI,
    client: TestClient,
    settings: Settings,
    make_survey: Callable[..., Survey],
    codebook_id: int,
    worker: Worker,
    admin: dict[str, str],
    db: Callable[[], Any],
    tmp_path: Path,
) -> None:
    stored = _imported(app, settings, make_survey(), tmp_path)
    worker.drain()
    with db() as session:
        version_id = session.scalars(select(CodebookVersion.id)).one()
    report = client.get("/api/v1/reports/agreement", headers=admin).json()
    assert report["model_vs_final_made_by"] == [
        {"model_id": None, "codebook_version_id": version_id, "n_stories": stored}
    ]
