"""`cit codebook import / export / list` against the test database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from sqlalchemy import func, select
from typer.testing import CliRunner, Result

from app.codebooks.cli import codebook_cli
from app.config import get_settings
from app.models import AuditEvent, CodebookVersion
from nlp.codebook import load_codebook_file, parse_codebook

from .conftest import DEFAULT_FILE


@pytest.fixture
def cit(
    app: FastAPI, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Result]]:
    """Run `cit codebook ...` with settings from the environment, as the real command does."""
    monkeypatch.setenv("CIT_DATABASE_URL", database_url)
    monkeypatch.setenv("CIT_ENV", "development")
    monkeypatch.delenv("CIT_SECRET_KEY", raising=False)
    get_settings.cache_clear()
    runner = CliRunner()
    yield lambda *args: runner.invoke(codebook_cli, [str(a) for a in args])
    get_settings.cache_clear()


def _versions(db: Callable[[], Any]) -> list[tuple[int, str, str]]:
    with db() as session:
        rows = session.execute(
            select(
                CodebookVersion.number, CodebookVersion.created_by, CodebookVersion.change_note
            ).order_by(CodebookVersion.id)
        ).all()
    return [tuple(row) for row in rows]


def test_import_export_round_trip(
    cit: Callable[..., Result], db: Callable[[], Any], tmp_path: Path
) -> None:
    first = cit("import", DEFAULT_FILE, "--note", "shipped default")
    assert first.exit_code == 0, first.output
    assert first.stdout.strip() == "codebook cit-service-encounters: version 1 (created)"
    again = cit("import", DEFAULT_FILE)
    assert again.exit_code == 0 and "version 1 (unchanged)" in again.stdout

    out = tmp_path / "exported.yaml"
    exported = cit("export", "cit-service-encounters", out)
    assert exported.exit_code == 0, exported.output
    assert "version 1" in exported.stdout
    assert load_codebook_file(out) == load_codebook_file(DEFAULT_FILE)

    # Edit the exported file and import it: a new version of the same codebook.
    data = yaml.safe_load(out.read_text("utf-8"))
    data["codes"][0]["label"] = "Complaint (service failure)"
    edited = tmp_path / "edited.yaml"
    edited.write_text(yaml.safe_dump(data, sort_keys=False), "utf-8")
    second = cit("import", edited, "--note", "clearer label")
    assert second.exit_code == 0, second.output
    assert "version 2 (new version)" in second.stdout
    assert _versions(db) == [(1, "cli", "shipped default"), (2, "cli", "clearer label")]

    old = tmp_path / "v1.yaml"
    assert cit("export", "cit-service-encounters", old, "--version", 1).exit_code == 0
    assert parse_codebook(yaml.safe_load(old.read_text("utf-8"))).codes[0].label == "Complaint"
    assert load_codebook_file(tmp_path / "v1.yaml") == load_codebook_file(DEFAULT_FILE)
    listed = cit("list")
    assert listed.exit_code == 0 and "cit-service-encounters  v2  4 codes" in listed.stdout

    with db() as session:
        actions = session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)).all()
        actors = set(session.scalars(select(AuditEvent.actor_name)).all())
    assert actions == ["codebook.create", "codebook.update"] and actors == {"cli"}


def test_invalid_file_names_every_place_and_saves_nothing(
    cit: Callable[..., Result], db: Callable[[], Any], tmp_path: Path
) -> None:
    data = yaml.safe_load(DEFAULT_FILE.read_text("utf-8"))
    data["codes"][1]["key"] = "complaint"
    data["codes"][2]["parent"] = "nobody"
    data["codes"][3]["threshold"] = 7
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data, sort_keys=False), "utf-8")
    result = cit("import", bad)
    assert result.exit_code == 1
    assert f"error: {bad} is not a valid codebook (3 problems); nothing was saved" in result.stderr
    assert "  - codes[1].key: duplicate key 'complaint'" in result.stderr
    assert "  - codes[2].parent: unknown parent 'nobody'" in result.stderr
    assert "  - codes[3].threshold: must be between 0 and 1" in result.stderr
    assert result.stdout == ""
    assert _versions(db) == []

    not_yaml = tmp_path / "broken.yaml"
    not_yaml.write_text("key: [unclosed\n", "utf-8")
    broken = cit("import", not_yaml)
    assert broken.exit_code == 1 and "is not valid YAML" in broken.stderr
    missing = cit("import", tmp_path / "missing.yaml")
    assert missing.exit_code == 1 and "cannot read" in missing.stderr

    unknown = cit("export", "no-such-codebook", tmp_path / "x.yaml")
    assert (
        unknown.exit_code == 1 and "no codebook with the key 'no-such-codebook'" in unknown.stderr
    )
    assert not (tmp_path / "x.yaml").exists()
    assert cit("import", DEFAULT_FILE).exit_code == 0
    no_version = cit("export", "cit-service-encounters", tmp_path / "x.yaml", "--version", 5)
    assert no_version.exit_code == 1 and "no version 5" in no_version.stderr
    with db() as session:
        assert session.scalar(select(func.count()).select_from(CodebookVersion)) == 1
