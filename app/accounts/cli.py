"""`cit person ...`: people who sign in in a browser, and their set-password links."""

from __future__ import annotations

from typing import Annotated

import typer

from app.accounts import service
from app.cli_support import fail, ready
from app.db import session_scope
from app.errors import AppError

person_cli = typer.Typer(help="People who sign in (name and password).", no_args_is_help=True)


@person_cli.command("create")
def person_create(
    name: Annotated[str, typer.Option(help="What the person signs in with")],
    role: Annotated[str, typer.Option(help="admin, researcher, viewer or case_manager")],
) -> None:
    """Create a person and print their one-time set-password link."""
    settings, sessions = ready()
    try:
        with session_scope(sessions) as session:
            user, link = service.create_person(
                session, name=name, role=role, actor=None, settings=settings
            )
            label = f"{user.name} ({user.role})"
    except AppError as exc:
        fail(exc.detail)
    typer.echo(
        f"{label} created. Set-password link (once, until {link.expires_at:%Y-%m-%d %H:%M} UTC):"
    )
    typer.echo(link.url)


@person_cli.command("link")
def person_link(name: Annotated[str, typer.Option(help="The person's name")]) -> None:
    """Print a new one-time set-password link (a reset); older unused links stop working."""
    settings, sessions = ready()
    try:
        with session_scope(sessions) as session:
            user = service.find_person(session, name)
            link = service.issue_password_link(session, user, actor=None, settings=settings)
    except AppError as exc:
        fail(exc.detail)
    typer.echo(f"Set-password link (once, until {link.expires_at:%Y-%m-%d %H:%M} UTC):")
    typer.echo(link.url)


@person_cli.command("revoke")
def person_revoke(name: Annotated[str, typer.Option(help="The person's name")]) -> None:
    """Revoke a person: signed out at once, API tokens stop working."""
    _settings, sessions = ready()
    try:
        with session_scope(sessions) as session:
            service.revoke_person(session, service.find_person(session, name), None)
    except AppError as exc:
        fail(exc.detail)
    typer.echo(f"{name} revoked")
