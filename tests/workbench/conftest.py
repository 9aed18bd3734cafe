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
