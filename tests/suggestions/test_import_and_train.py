"""Importing an earlier study, training a model on confirmed codes, and the batch CLI."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from app.config import Settings, get_settings
from app.imports.service import ImportOptions, ImportReport, import_file
from app.models import Incident, IncidentCode, NlpModel, Survey
from app.suggestions.worker import Worker
from tests.suggestions.conftest import DEFAULT_CODEBOOK


def import_incidents(
    factory: Any, path: Path, survey_id: int, settings: Settings, *, imported_by: str
) -> ImportReport:
    return import_file(factory, path, survey_id, settings, ImportOptions(), imported_by=imported_by)


def _examples() -> list[tuple[str, str]]:
    content = yaml.safe_load(DEFAULT_CODEBOOK.read_text(encoding="utf-8"))
    return [(code["key"], text) for code in content["codes"] for text in code["examples"]]


def _study_file(tmp_path: Path, copies: int = 2) -> Path:
    rows = []
    for n in range(copies):
        for i, (code, text) in enumerate(_examples()):
            valence = "satisfying" if code == "extra_mile" else "dissatisfying"
            rows.append(
                {
                    "id": f"{code}-{i}-{n}",
                    "what_happened": f"{text} (case {n})",
                    "valence": valence,
                    "codes": [code],
                    "segment": "legacy",
                }
            )
    path = tmp_path / "study.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def _unseen_study(tmp_path: Path) -> Path:
    """80 confirmed stories whose codes no rule can see: "dreadful" marks a complaint."""
    words = ["the", "day", "train", "shop", "bus", "aunt", "tea", "letter", "street", "gate"]
    rows = []
    for n in range(80):
        complaint = n % 2 == 0
        filler = " ".join(words[(n * 7 + i) % len(words)] for i in range(8))
        rows.append(
            {
                "id": f"unseen-{n}",
                "what_happened": f"{filler} {'dreadful' if complaint else 'pleasant'} {n}",
                "valence": "dissatisfying" if complaint else "satisfying",
                "codes": ["complaint"] if complaint else ["extra_mile"],
            }
        )
    path = tmp_path / "unseen.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_import_reports_bad_rows_and_keeps_good_ones(
    app: FastAPI,
    settings: Settings,
    make_survey: Callable[..., Survey],
    codebook_id: int,
    db: Callable[[], Any],
    tmp_path: Path,
) -> None:
    survey = make_survey()
    path = tmp_path / "study.csv"
    path.write_text(
        "id,what_happened,valence,codes,touchpoint,segment,occurred,language\n"
        "a1,They lost my bag and nobody called back,dissatisfying,complaint,Baggage,gold,"
        "2023-05-01,de\n"
        "a2,,dissatisfying,complaint,,gold,,\n"
        "a3,The pilot waited for me,satisfying,extra_mile;nonsense,,gold,,\n"
        "a4,I typed the wrong account number,dissatisfying,owner_error,,,last spring,\n"
        "a5,Great crew,happy,,,,,\n",
        encoding="utf-8",
    )
    report = import_incidents(
        app.state.sessionmaker, path, survey.id, settings, imported_by="import:study.csv"
    )
    assert (report.stored, report.coded) == (2, 2)
    assert [e.line for e in report.errors] == [3, 4, 6]
    messages = {e.line: str(e) for e in report.errors}
    assert "what_happened" in messages[3] and "nonsense" in messages[4]
    assert "valence" in messages[6]
    with db() as session:
        stories = session.scalars(select(Incident).order_by(Incident.id)).all()
        assert [s.attributes["import_id"] for s in stories] == ["a1", "a4"]
        assert stories[0].attributes["segment"] == "gold" and stories[0].touchpoint == "Baggage"
        assert str(stories[0].occurred_on) == "2023-05-01" and stories[0].language == "de"
        assert stories[1].occurred_on is None and stories[1].occurred_text == "last spring"
        assert stories[1].language == "en"
        codes = session.scalars(select(IncidentCode.code).order_by(IncidentCode.id)).all()
        assert codes == ["complaint", "owner_error"]
        assert {c.source for c in session.scalars(select(IncidentCode))} == {"import"}
    again = import_incidents(
        app.state.sessionmaker, path, survey.id, settings, imported_by="import:study.csv"
    )
    assert (again.stored, again.duplicates) == (0, 2)


def test_train_through_the_api_and_suggest_from_the_model(
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
    too_early = client.post("/api/v1/nlp/train", headers=admin, json={})
    assert too_early.status_code == 400 and "rule layer" in too_early.json()["detail"]

    report = import_incidents(
        app.state.sessionmaker, _unseen_study(tmp_path), survey.id, settings, imported_by="import"
    )
    assert report.ok and report.stored >= 40
    response = client.post("/api/v1/nlp/train", headers=admin, json={})
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    client.post(
        f"/api/v1/public/surveys/{survey.slug}/incidents",
        json={
            "what_happened": "A dreadful morning at the gate with my aunt and a letter.",
            "valence": "dissatisfying",
        },
    )
    worker.drain()

    job = client.get(f"/api/v1/jobs/{job_id}", headers=admin).json()
    assert job["status"] == "done", job
    models = client.get("/api/v1/nlp/models", headers=token_for("researcher")).json()
    assert len(models) == 1 and models[0]["active"] is True
    assert models[0]["n_examples"] == report.stored
    with db() as session:
        model = session.scalars(select(NlpModel)).one()
        assert (Path(model.path) / "cit-model.json").exists()
        assert str(settings.models_dir.resolve()) in model.path
    items = client.get("/api/v1/incidents?limit=500", headers=admin).json()["items"]
    fresh = [i for i in items if not i["final_codes"]]
    assert len(fresh) == 1
    layers = {c["code"]: c["layer"] for c in models[0]["codes"]}
    assert {s["code"]: s["source"] for s in fresh[0]["suggestions"]} == layers
    assert layers["complaint"] in ("model", "combined"), layers  # the rules cannot see it
    kappas = {c["code"]: c["kappa"] for c in models[0]["codes"]}
    for suggestion in fresh[0]["suggestions"]:
        assert suggestion["model_id"] == models[0]["id"]
        assert suggestion["kappa"] == kappas[suggestion["code"]]


def test_cli_suggest_uses_the_service_path(tmp_path: Path) -> None:
    from app.cli import cli

    stories = tmp_path / "in.jsonl"
    stories.write_text(
        json.dumps({"id": 1, "text": "I forgot my PIN, mail me at a@b.example"})
        + "\n"
        + json.dumps(
            {
                "id": "x",
                "what_happened": "They went above and beyond for us.",
                "outcome": "Amazing service.",
            }
        )
        + "\n"
        + "{not json\n",
        encoding="utf-8",
    )
    out = tmp_path / "out.jsonl"
    get_settings.cache_clear()
    result = CliRunner().invoke(
        cli,
        [
            "nlp",
            "suggest",
            "--in",
            str(stories),
            "--out",
            str(out),
            "--codebook-file",
            str(DEFAULT_CODEBOOK),
        ],
    )
    get_settings.cache_clear()
    assert result.exit_code == 1 and "line 3" in result.output
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [line["id"] for line in lines] == [1, "x"]
    first = {s["code"]: s for s in lines[0]["suggestions"]}
    assert first["owner_error"]["suggested"] and "[EMAIL]" in lines[0]["text"]
    second = {s["code"]: s for s in lines[1]["suggestions"]}
    assert second["extra_mile"]["suggested"]
    assert {e["field"] for e in second["extra_mile"]["evidence"]} <= {"what_happened", "outcome"}


def test_evaluate_cli_reports_per_code_figures(
    app: FastAPI,
    settings: Settings,
    make_survey: Callable[..., Survey],
    codebook_id: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.cli import cli

    survey = make_survey()
    import_incidents(
        app.state.sessionmaker, _study_file(tmp_path, 1), survey.id, settings, imported_by="import"
    )
    monkeypatch.setenv("CIT_DATABASE_URL", settings.database_url)
    get_settings.cache_clear()
    result = CliRunner().invoke(cli, ["nlp", "evaluate", "--folds", "3", "--json", "-"])
    get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    per_code = {c["code"]: c for c in report["codes"]}
    assert set(per_code) == {"complaint", "special_request", "extra_mile", "owner_error"}
    for figures in per_code.values():
        assert figures["support"] == 8 and figures["negatives"] == 24
        assert set(figures["candidates"]) == {"rules", "model", "combined"}
        rules = figures["candidates"]["rules"]
        assert rules["tp"] + rules["fp"] + rules["fn"] + rules["tn"] == 32
    assert report["k"] == 3 and report["n_final"] == len(_examples())
    assert 0 <= report["macro"]["selected"]["f1"] <= 1
    with app.state.sessionmaker() as session:
        assert session.scalar(select(func.count()).select_from(Incident)) == len(_examples())


def test_imported_attributes_are_redacted_for_researchers(
    app: FastAPI,
    client: TestClient,
    settings: Settings,
    make_survey: Callable[..., Survey],
    codebook_id: int,
    tmp_path: Path,
    admin: dict[str, str],
    token_for: Callable[..., dict[str, str]],
) -> None:
    survey = make_survey()
    path = tmp_path / "old.csv"
    path.write_text(
        "id,what_happened,valence,comment\n"
        "1,The bag never arrived,dissatisfying,call me on +1 415 555 0134 or x@y.example\n",
        encoding="utf-8",
    )
    assert (
        import_incidents(app.state.sessionmaker, path, survey.id, settings, imported_by="t").stored
        == 1
    )
    seen = client.get("/api/v1/incidents", headers=token_for("researcher")).json()["items"][0]
    assert "x@y.example" not in seen["attributes"]["comment"]
    assert "[EMAIL]" in seen["attributes"]["comment"] and "[PHONE]" in seen["attributes"]["comment"]
    original = client.get("/api/v1/incidents", headers=admin).json()["items"][0]
    assert original["attributes"]["comment"].endswith("x@y.example")


def test_one_active_model_per_codebook(db: Callable[[], Any], codebook_id: int) -> None:
    from sqlalchemy.exc import IntegrityError

    from app.models import CodebookVersion

    with db() as session:
        version = session.scalars(select(CodebookVersion)).first()
        assert version is not None
        fields = {
            "codebook_id": codebook_id,
            "codebook_version_id": version.id,
            "path": "/x",
            "n_examples": 30,
            "metrics": {},
            "trained_by": "t",
        }
        session.add_all([NlpModel(**fields, active=False), NlpModel(**fields, active=False)])
        session.add(NlpModel(**fields, active=True))
    with pytest.raises(IntegrityError), db() as session:
        session.add(NlpModel(**fields, active=True))
        session.flush()
