"""Fixtures for codebooks: the router on the test app, the default codebook file, stories with
final codes (ORM rows, as the review step would write them)."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Codebook, CodebookVersion, Incident, IncidentCode, Suggestion, Survey

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FILE = ROOT / "codebooks" / "cit-service-encounters.yaml"
PROBLEM = "application/problem+json"
API = "/api/v1/codebooks"


@pytest.fixture
def default_content() -> dict[str, Any]:
    """The shipped default codebook as a mapping (a fresh copy per test)."""
    return copy.deepcopy(yaml.safe_load(DEFAULT_FILE.read_text("utf-8")))


def small_codebook(
    key: str = "study-a", codes: tuple[str, ...] = ("a", "b", "c")
) -> dict[str, Any]:
    return {
        "key": key,
        "name": f"Codebook {key}",
        "codes": [
            {
                "key": code,
                "label": f"Code {code}",
                "definition": f"Definition of {code}",
                "indicators": {"phrases": [f"phrase {code}"]},
            }
            for code in codes
        ],
    }


@pytest.fixture
def create_codebook(client: TestClient, admin: dict[str, str]) -> Callable[..., dict[str, Any]]:
    """Factory: a codebook created through the API (the CodebookRead answer)."""

    def make(content: dict[str, Any] | None = None, note: str = "") -> dict[str, Any]:
        response = client.post(
            API, json={"content": content or small_codebook(), "change_note": note}, headers=admin
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    return make


def current_version_id(session: Session, codebook_id: int) -> int:
    number = select(Codebook.current_version).where(Codebook.id == codebook_id).scalar_subquery()
    found = session.scalar(
        select(CodebookVersion.id).where(
            CodebookVersion.codebook_id == codebook_id, CodebookVersion.number == number
        )
    )
    assert found is not None
    return int(found)


@pytest.fixture
def make_story(db: Callable[[], Any], make_survey: Callable[..., Survey]) -> Callable[..., int]:
    """Factory: a story with the given final codes under a codebook's current version; its id."""
    counter = itertools.count(1)
    surveys: dict[str, int] = {}

    def make(codebook_id: int, codes: list[str], source: str = "review") -> int:
        if "id" not in surveys:
            surveys["id"] = make_survey().id
        with db() as session:
            version_id = current_version_id(session, codebook_id)
            incident = Incident(
                survey_id=surveys["id"],
                submission_key=f"story-{next(counter)}",
                what_happened="Something happened at the gate.",
                valence="dissatisfying",
                language="en",
                attributes={},
                redacted={},
                redaction_spans={},
            )
            session.add(incident)
            session.flush()
            session.add_all(
                IncidentCode(
                    incident_id=incident.id,
                    code=code,
                    codebook_version_id=version_id,
                    source=source,
                    confirmed_by="coder-1",
                )
                for code in codes
            )
            return incident.id

    return make


@pytest.fixture
def add_suggestions(db: Callable[[], Any]) -> Callable[[int, int, dict[str, bool]], None]:
    """Factory: a story's stored suggestions under the codebook's current version, given as
    {code: suggested}, in the worker's format (one row per story, one item per code)."""

    def add(incident_id: int, codebook_id: int, codes: dict[str, bool]) -> None:
        with db() as session:
            items = [
                {
                    "code": code,
                    "score": 0.9 if suggested else 0.1,
                    "suggested": suggested,
                    "source": "rules",
                    "evidence": [],
                }
                for code, suggested in codes.items()
            ]
            session.add(
                Suggestion(
                    incident_id=incident_id,
                    items=items,
                    certainty=0.4,
                    codebook_version_id=current_version_id(session, codebook_id),
                )
            )

    return add


@pytest.fixture
def final_codes(db: Callable[[], Any]) -> Callable[[], dict[int, dict[str, int]]]:
    """Every story's final codes: {incident id: {code: codebook_version_id}}."""

    def read() -> dict[int, dict[str, int]]:
        with db() as session:
            rows = session.execute(
                select(
                    IncidentCode.incident_id, IncidentCode.code, IncidentCode.codebook_version_id
                )
            ).all()
        found: dict[int, dict[str, int]] = {}
        for incident_id, code, version_id in rows:
            found.setdefault(incident_id, {})[code] = version_id
        return found

    return read
