"""`cit cases` and `cit alerts` on a real database of their own."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from app.cli import cli
from app.config import get_settings
from app.db import create_db_engine, make_sessionmaker
from app.models import AuditEvent, Case, Incident, IncidentContact, Survey
from app.models.base import utcnow


@pytest.fixture
def cli_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("CIT_DATABASE_URL", url)
    monkeypatch.setenv("CIT_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_cases_and_alerts_commands(cli_db: str, tmp_path: Path) -> None:
    assert run("db", "upgrade")[0] == 0
    code, output = run("token", "create", "--name", "Cam", "--role", "case_manager")
    assert code == 0 and "(case_manager)" in output
    key = run("cases", "new-key")[1].strip()
    assert len(key) == 44
    factory = make_sessionmaker(create_db_engine(cli_db))
    with factory() as session:
        survey = Survey(slug="s", title="S", questions={}, choices={}, status="open")
        session.add(survey)
        session.flush()
        story = Incident(
            survey_id=survey.id,
            submission_key="k",
            what_happened="x",
            valence="dissatisfying",
            language="en",
            attributes={},
            redacted={},
            redaction_spans={},
            submitted_at=utcnow(),
        )
        session.add(story)
        session.flush()
        from app.cases import crypto

        session.add(
            IncidentContact(
                incident_id=story.id,
                survey_id=survey.id,
                kind="email",
                ciphertext=crypto.encrypt(get_settings(), "a@example.org"),
            )
        )
        session.commit()
        survey_id = survey.id
    assert run("cases", "open-due") == (0, "1 case(s) opened\n")
    listed = [json.loads(line) for line in run("cases", "list")[1].splitlines()]
    assert [c["status"] for c in listed] == ["open"] and listed[0]["contact"] is None
    case_id = listed[0]["id"]
    assert run("cases", "status", str(case_id), "resolved")[0] == 0
    assert run("cases", "status", str(case_id), "closed")[0] == 1
    assert run("cases", "note", str(case_id), "called back")[0] == 0
    assert run("cases", "rotate-keys") == (0, "1 contact(s) re-encrypted with the first key\n")
    rule = {"survey_id": survey_id, "name": "r", "code": "complaint", "trigger": "rise"}
    assert run("alerts", "add-rule", json.dumps(rule)) == (0, "rule 1 created\n")
    assert run("alerts", "add-rule", json.dumps({**rule, "trigger": "above"}))[0] == 1
    assert json.loads(run("alerts", "rules")[1])["name"] == "r"
    code, output = run("alerts", "fold")
    assert code == 0 and "alert(s) fired" in output
    assert run("alerts", "list") == (0, "")
    with factory() as session:
        assert session.scalars(select(Case.status)).all() == ["resolved"]
        actions = session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)).all()
        assert "case.status" in actions and "case.note" in actions
