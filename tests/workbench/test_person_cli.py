"""`cit person create|link|revoke`, and `cit demo` printing a set-password link for the demo
admin, on a real database; the printed link works in the app."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select

from app.config import get_settings
from app.db import create_db_engine, make_sessionmaker
from app.main import create_app
from app.models import PasswordLink, User
from tests.test_cli import cli_db, run  # noqa: F401  (fixture)


def _link(output: str) -> str:
    return next(line.strip() for line in output.splitlines() if "/account/password/" in line)


def test_person_commands(cli_db: str) -> None:  # noqa: F811
    run("db", "upgrade")
    code, output = run("person", "create", "--name", "Ines", "--role", "researcher")
    assert code == 0, output
    first = _link(output)
    assert first.startswith("http://survey.example/account/password/")
    code, output = run("person", "create", "--name", "Ines", "--role", "researcher")
    assert code == 1 and "exists already" in output
    code, output = run("person", "link", "--name", "Ines")
    assert code == 0 and _link(output) != first
    code, output = run("person", "link", "--name", "Nobody")
    assert code == 1 and "nobody called" in output
    code, output = run("person", "revoke", "--name", "Ines")
    assert code == 0 and "revoked" in output
    code, output = run("person", "link", "--name", "Ines")
    assert code == 1 and "revoked" in output
    with make_sessionmaker(create_db_engine(cli_db))() as session:
        user = session.scalars(select(User).where(User.name == "Ines")).one()
        assert user.disabled_at is not None
        assert session.scalars(select(PasswordLink)).all() == []


def test_demo_prints_a_working_set_password_link_for_the_demo_admin(cli_db: str) -> None:  # noqa: F811
    run("db", "upgrade")
    code, output = run("demo")
    assert code == 0, output
    link = _link(output)
    assert "demo-admin" in output and "cit_" in output
    with TestClient(create_app(get_settings())) as client:
        page = client.get(link.removeprefix("http://survey.example"))
        assert page.status_code == 200 and "You sign in as <strong>demo-admin</strong>" in page.text
    code, output = run("demo")
    assert "cit person link --name demo-admin" in output
