"""compose.yaml cannot be started here (no Docker engine): check what can be checked without one,
that every command it gives the image is one the CLI accepts, every setting it passes is one the
service reads, and that the API and the worker start only after the one-off migration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from app.cli import cli
from app.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_every_service_of_the_image_runs_a_command_the_cli_accepts() -> None:
    services = _compose()["services"]
    ours = {name: s for name, s in services.items() if s.get("image") == "cit-service"}
    assert set(ours) == {"migrate", "api", "worker"}
    runner = CliRunner()
    for name, service in ours.items():
        result = runner.invoke(cli, [*service["command"], "--help"])
        assert result.exit_code == 0, (name, result.output)
    assert "--no-worker" in ours["api"]["command"]  # the worker service does the jobs


def test_the_settings_passed_are_settings_the_service_reads() -> None:
    fields = {f"CIT_{name.upper()}" for name in Settings.model_fields}
    for name, service in _compose()["services"].items():
        for key in service.get("environment", {}):
            if key.startswith("CIT_"):
                assert key in fields, (name, key)
    api_env = _compose()["services"]["api"]["environment"]
    assert api_env["CIT_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert api_env["CIT_ENV"] == "production"


def test_migrations_run_once_before_the_api_and_the_worker_start() -> None:
    services = _compose()["services"]
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        assert services[name]["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"}
        }
    assert "healthcheck" in services["db"]
    command = services["api"]["command"]
    port = command[command.index("--port") + 1]
    assert any(str(p).endswith(f":{port}") for p in services["api"]["ports"])
