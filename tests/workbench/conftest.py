"""Fixtures for the workbench pages: people who sign in through the real sign-in form (each
with a client of their own holding the session cookie), the CSRF token from the page they
got, and the default codebook."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.accounts import service as accounts
from app.codebooks.service import ensure_default_codebook
from app.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CODEBOOK = ROOT / "codebooks" / "cit-service-encounters.yaml"
PASSWORD = "correct horse battery staple"
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF_RE.search(html)
    assert found, "the page has no CSRF field"
    return found.group(1)


@dataclass
class Browser:
    """One person's browser: a client with its own cookie jar."""

    name: str
    role: str
    client: TestClient

    def page(self, path: str, status: int = 200) -> str:
        response = self.client.get(path)
        assert response.status_code == status, (path, response.status_code, response.text[:500])
        return response.text

    def post(self, path: str, data: dict[str, Any], *, from_page: str | None = None) -> Any:
        """Post a form as the page at `from_page` (default: `path`) would, CSRF token included."""
        token = csrf_of(self.page(from_page or path))
        return self.client.post(path, data={"csrf_token": token, **data}, follow_redirects=False)


def make_person(
    app: FastAPI, settings: Settings, name: str, role: str, password: str = PASSWORD
) -> None:
    from app.db import session_scope

    with session_scope(app.state.sessionmaker) as session:
        _user, link = accounts.create_person(
            session, name=name, role=role, actor=None, settings=settings
        )
        accounts.set_password(session, link.url.rsplit("/", 1)[1], password, password)


def sign_in(client: TestClient, name: str, password: str = PASSWORD) -> Any:
    form = client.get("/sign-in")
    return client.post(
        "/sign-in",
        data={
            "csrf_token": csrf_of(form.text),
            "name": name,
            "password": password,
            "next": "/work",
        },
        follow_redirects=False,
    )


@pytest.fixture
def browser(app: FastAPI, settings: Settings) -> Iterator[Callable[..., Browser]]:
    """Factory: a new person with a password, signed in through the form in their own client."""
    counter = itertools.count(1)
    clients: list[TestClient] = []

    def make(role: str = "researcher", name: str | None = None) -> Browser:
        name = name or f"{role}-web-{next(counter)}"
        make_person(app, settings, name, role)
        client = TestClient(app, base_url="http://testserver")
        client.__enter__()
        clients.append(client)
        response = sign_in(client, name)
        assert response.status_code == 303, response.text
        return Browser(name, role, client)

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def codebook_id(db: Callable[[], Any]) -> int:
    with db() as session:
        return ensure_default_codebook(session, DEFAULT_CODEBOOK).codebook_id


@pytest.fixture
def survey(make_survey: Callable[..., Any], codebook_id: int) -> Any:
    return make_survey(title="Airline survey", codebook_id=codebook_id)


STORY = {
    "occurred": "2025-03-14",
    "circumstances": "Checking in for a flight to Boston.",
    "what_happened": "The agent rebooked me without being asked. She even walked me to the gate.",
    "outcome": "I made my connection.",
    "valence": "satisfying",
    "touchpoint": None,
    "channel": None,
}


@pytest.fixture
def make_story(db: Callable[[], Any]) -> Callable[..., int]:
    """Factory: a story stored as the form stores it (redaction included), with rule-like
    suggestions when `suggested` names codes; returns its id."""
    from datetime import timedelta

    from app.incidents.intake import store_story
    from app.incidents.service import CleanStory, parse_occurred_on
    from app.models import Suggestion, Survey
    from app.models.base import utcnow
    from app.reviews.service import codebook_version_for

    counter = itertools.count(1)

    def make(
        survey: Any, *, suggested: tuple[str, ...] = (), evidence: str | None = None, **answers: Any
    ) -> int:
        with db() as session:
            stored = session.get(Survey, survey.id)
            fields = {**STORY, **answers}
            n = next(counter)
            result = store_story(
                session,
                stored,
                CleanStory(fields, parse_occurred_on(fields["occurred"])),
                submission_key=f"workbench-story-{n}",
                invitation_token=None,
            )
            incident = result.incident
            assert incident is not None
            incident.submitted_at = utcnow() - timedelta(minutes=10_000 - n)
            if suggested:
                text = incident.redacted.get("what_happened") or ""
                items = []
                for code in ("complaint", "special_request", "extra_mile", "owner_error"):
                    ev = []
                    if code in suggested and evidence and evidence in text:
                        start = text.index(evidence)
                        ev = [
                            {
                                "field": "what_happened",
                                "start": start,
                                "end": start + len(evidence),
                                "text": evidence,
                                "indicator": evidence,
                            }
                        ]
                    items.append(
                        {
                            "code": code,
                            "score": 0.8 if code in suggested else 0.1,
                            "suggested": code in suggested,
                            "source": "rules",
                            "evidence": ev,
                        }
                    )
                session.add(
                    Suggestion(
                        incident_id=incident.id,
                        items=items,
                        certainty=0.6,
                        codebook_version_id=codebook_version_for(session, stored.id).id,
                    )
                )
            session.flush()
            return incident.id

    return make
