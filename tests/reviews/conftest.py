"""Fixtures for the review workflow: its routers on the test app, the default codebook, stories
stored through the service, researchers, and a small client for coding through the API."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from app.codebooks.service import ensure_default_codebook
from app.config import Settings
from app.incidents.intake import store_story
from app.incidents.service import CleanStory
from app.models import Incident, ReviewLease, Suggestion, Survey
from app.models.base import utcnow
from app.reviews.service import codebook_version_for

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CODEBOOK = ROOT / "codebooks" / "cit-service-encounters.yaml"
CODES = ("complaint", "special_request", "extra_mile", "owner_error")
PROBLEM = "application/problem+json"


@pytest.fixture
def codebook_id(db: Callable[[], Any]) -> int:
    with db() as session:
        version = ensure_default_codebook(session, DEFAULT_CODEBOOK)
        return version.codebook_id


@pytest.fixture
def survey(make_survey: Callable[..., Survey], codebook_id: int) -> Survey:
    """An open survey coded with the default codebook, every story single-coded."""
    return make_survey(codebook_id=codebook_id)


@dataclass(frozen=True)
class Person:
    name: str
    headers: dict[str, str]


@dataclass
class Review:
    """Coding through the API, as a front end would."""

    client: TestClient

    def read(self, who: Person, incident_id: int) -> tuple[dict[str, Any], str]:
        response = self.client.get(f"/api/v1/incidents/{incident_id}", headers=who.headers)
        assert response.status_code == 200, response.text
        return response.json(), response.headers["ETag"]

    def put(
        self,
        who: Person,
        incident_id: int,
        codes: list[str] | None = None,
        *,
        exclude: str | None = None,
        rejected: list[str] | None = None,
        etag: str | None = None,
        note: str | None = None,
    ) -> Any:
        if etag is None:
            etag = self.read(who, incident_id)[1]
        body: dict[str, Any] = (
            {"exclude": True, "exclusion_reason": exclude}
            if exclude
            else {
                "codes": [{"code": c, "origin": "manual"} for c in codes or []],
                "rejected_suggestions": rejected or [],
            }
        )
        if note is not None:
            body["note"] = note
        return self.client.put(
            f"/api/v1/incidents/{incident_id}/codings/me",
            json=body,
            headers={**who.headers, "If-Match": etag},
        )

    def code(self, who: Person, incident_id: int, codes: list[str], **kw: Any) -> dict[str, Any]:
        response = self.put(who, incident_id, codes, **kw)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def exclude(self, who: Person, incident_id: int, reason: str) -> dict[str, Any]:
        response = self.put(who, incident_id, exclude=reason)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def next(self, who: Person, survey_id: int | None = None) -> dict[str, Any] | None:
        body = {"survey_id": survey_id} if survey_id is not None else None
        response = self.client.post("/api/v1/review/next", json=body, headers=who.headers)
        if response.status_code == 204:
            return None
        assert response.status_code == 200, response.text
        # The story's version, and the caller's own coding revision (none yet: 0).
        assert response.headers["ETag"] == f'"{response.json()["incident"]["version"]}.0"'
        return dict(response.json())

    def next_id(self, who: Person, survey_id: int | None = None) -> int | None:
        item = self.next(who, survey_id)
        return None if item is None else int(item["incident"]["id"])

    def adjudicate(self, admin: Person, incident_id: int, body: dict[str, Any]) -> Any:
        etag = self.read(admin, incident_id)[1]
        return self.client.put(
            f"/api/v1/incidents/{incident_id}/adjudication",
            json=body,
            headers={**admin.headers, "If-Match": etag},
        )

    def status(self, who: Person, incident_id: int) -> str:
        return str(self.read(who, incident_id)[0]["status"])


@pytest.fixture
def review(client: TestClient) -> Review:
    return Review(client)


@pytest.fixture
def person(token_for: Callable[..., dict[str, str]]) -> Callable[..., Person]:
    """Factory: a named person with a token of the given role (researcher by default)."""
    counter = itertools.count(1)

    def make(role: str = "researcher", name: str | None = None) -> Person:
        name = name or f"{role}-{next(counter)}"
        return Person(name, token_for(role, name))

    return make


@pytest.fixture
def admin_person(person: Callable[..., Person]) -> Person:
    return person("admin", "the-admin")


STORY: dict[str, str | None] = {
    "occurred": "Last spring",
    "circumstances": "Checking in for a flight.",
    "what_happened": "The agent rebooked me without being asked.",
    "outcome": "I made my connection.",
    "valence": "satisfying",
    "touchpoint": None,
    "channel": None,
}


@pytest.fixture
def make_story(db: Callable[[], Any], settings: Settings) -> Callable[..., int]:
    """Factory: a story stored as a submission would be (redaction included); its id.
    `age_minutes` backdates it; `certainty` stores suggestions with that certainty."""
    counter = itertools.count(1)

    def make(
        survey: Survey,
        *,
        age_minutes: float | None = None,
        certainty: float | None = None,
        suggested: tuple[str, ...] | None = None,
        **answers: Any,
    ) -> int:
        with db() as session:
            stored = session.get(Survey, survey.id)
            assert stored is not None
            story = CleanStory({**STORY, **answers}, None)
            result = store_story(
                session,
                stored,
                story,
                submission_key=f"review-story-{next(counter)}",
                invitation_token=None,
            )
            assert result.incident is not None
            incident = result.incident
            n = next(counter)
            incident.submitted_at = utcnow() - timedelta(
                minutes=age_minutes if age_minutes is not None else 10_000 - n
            )
            if certainty is not None or suggested is not None:
                session.add(
                    Suggestion(
                        incident_id=incident.id,
                        items=[
                            {
                                "code": code,
                                "score": 0.9 if code in (suggested or ()) else 0.1,
                                "suggested": code in (suggested or ()),
                                "source": "rules",
                                "evidence": [],
                            }
                            for code in CODES
                        ],
                        certainty=certainty if certainty is not None else 0.4,
                        codebook_version_id=_current_version_id(session, stored),
                    )
                )
            session.flush()
            return incident.id

    return make


def _current_version_id(session: Any, survey: Survey) -> int:
    return codebook_version_for(session, survey.id).id


@pytest.fixture
def set_incident(db: Callable[[], Any]) -> Callable[..., None]:
    """Set columns of stories directly (e.g. coders_required for a three-coder study)."""

    def apply(ids: list[int], **values: Any) -> None:
        with db() as session:
            session.execute(update(Incident).where(Incident.id.in_(ids)).values(**values))

    return apply


@pytest.fixture
def expire_leases(db: Callable[[], Any]) -> Callable[[], None]:
    def expire() -> None:
        with db() as session:
            session.execute(update(ReviewLease).values(expires_at=utcnow() - timedelta(seconds=1)))

    return expire


@pytest.fixture
def threads() -> Iterator[Callable[[int], ThreadPoolExecutor]]:
    pools: list[ThreadPoolExecutor] = []

    def make(n: int) -> ThreadPoolExecutor:
        pool = ThreadPoolExecutor(max_workers=n)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.shutdown(wait=True)
