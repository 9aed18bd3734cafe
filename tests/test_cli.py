"""The `cit` command on a real database: migrations, tokens, surveys, demo, import, resuggest."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from app.cli import cli
from app.config import get_settings
from app.db import create_db_engine, make_sessionmaker
from app.models import ApiToken, Incident, Job, Suggestion, Survey

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def cli_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh SQLite database of its own (the CLI manages migrations itself)."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("CIT_DATABASE_URL", url)
    monkeypatch.setenv("CIT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CIT_PUBLIC_BASE_URL", "http://survey.example")
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def count(url: str, model: type) -> int:
    with make_sessionmaker(create_db_engine(url))() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_commands_refuse_a_database_behind_the_migrations(cli_db: str) -> None:
    for args in (("serve",), ("demo",), ("token", "create", "--name", "a", "--role", "admin")):
        code, output = run(*args)
        assert code == 1 and "cit db upgrade" in output
    code, output = run("db", "upgrade")
    assert code == 0 and "database at revision" in output
    code, output = run("db", "current")
    current, head = output.split()[1], output.split()[3]
    assert current == head


def test_demo_loads_codebook_survey_and_token_once(cli_db: str) -> None:
    run("db", "upgrade")
    code, output = run("demo")
    assert code == 0, output
    assert "http://survey.example/s/demo" in output and "cit_" in output
    assert count(cli_db, Survey) == 1 and count(cli_db, ApiToken) == 1
    code, output = run("demo")
    assert code == 0 and "nothing loaded" in output
    assert count(cli_db, Survey) == 1 and count(cli_db, ApiToken) == 1
    code, output = run("codebook", "list")
    assert "cit-service-encounters" in output


def test_token_and_survey_creation(cli_db: str, tmp_path: Path) -> None:
    run("db", "upgrade")
    code, output = run("token", "create", "--name", "Ana", "--role", "researcher")
    assert code == 0 and output.strip().splitlines()[-1].startswith("cit_")
    code, output = run("token", "create", "--name", "Bo", "--role", "boss")
    assert code == 1 and "unknown role" in output

    good = tmp_path / "survey.yaml"
    good.write_text("title: Branch visits\nlanguage: de\ntouchpoints: [Schalter]\n", "utf-8")
    code, output = run("survey", "create", str(good), "--open")
    assert code == 0 and "(open)" in output and "http://survey.example/s/branch-visits-" in output
    bad = tmp_path / "bad.yaml"
    bad.write_text("title: ''\nlanguage: fr\ncolour: red\n", "utf-8")
    code, output = run("survey", "create", str(bad))
    assert code == 1
    assert "title" in output and "language" in output and "colour" in output
    assert count(cli_db, Survey) == 1


def test_import_and_resuggest(cli_db: str, tmp_path: Path) -> None:
    run("db", "upgrade")
    run("demo")
    stories = tmp_path / "old.jsonl"
    stories.write_text(
        '{"id": 1, "text": "They lost my bag and never called back", "valence": "dissatisfying",'
        ' "codes": ["complaint"]}\n'
        '{"id": 2, "text": "I forgot my passport at home", "valence": "dissatisfying"}\n'
        "not json\n"
        '{"id": 4, "text": "fine", "valence": "meh"}\n',
        "utf-8",
    )
    code, output = run("import", "incidents", str(stories), "--survey", "1")
    assert code == 1
    assert "2 stories imported (1 with confirmed codes)" in output
    assert "line 3: not valid JSON" in output and "line 4: valence" in output
    assert count(cli_db, Incident) == 2 and count(cli_db, Job) == 2

    code, output = run("nlp", "resuggest")
    assert code == 0, output
    # the one story not yet coded, plus the job the import queued for the coded one
    assert "stories not yet coded: 1; scored: 2; failed: 0" in output
    assert count(cli_db, Suggestion) == 2 and count(cli_db, Job) == 0

    code, output = run("worker", "--once")
    assert code == 0 and "0 jobs done" in output


def test_reports_rebuild_recomputes_the_rollups(cli_db: str) -> None:
    from sqlalchemy import text

    run("db", "upgrade")
    run("demo")
    engine = create_db_engine(cli_db)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO report_story_days (survey_id, day, valence, stories, "
                "confirmed, excluded) VALUES (1, '2020-01-01', 'satisfying', 9, 0, 0)"
            )
        )
    code, output = run("reports", "rebuild")
    assert code == 0 and "rebuilt" in output
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM report_story_days")).scalar() == 0
