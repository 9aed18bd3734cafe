"""Fixtures for the suggestion pipeline: the default codebook and a worker on the test database."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from app.codebooks.service import ensure_default_codebook
from app.config import Settings
from app.suggestions.worker import Worker

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CODEBOOK = ROOT / "codebooks" / "cit-service-encounters.yaml"


@pytest.fixture
def codebook_id(db: Callable[[], Any]) -> int:
    with db() as session:
        version = ensure_default_codebook(session, DEFAULT_CODEBOOK)
        return version.codebook_id


@pytest.fixture
def worker(app: FastAPI, settings: Settings) -> Worker:
    return Worker(app.state.sessionmaker, settings, name="test-worker")
