"""`cit incident erase ID --reason TEXT`: the admin's erasure from the command line."""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli_support import fail, ready
from app.db import session_scope
from app.erasure import service
from app.errors import AppError

incident_cli = typer.Typer(help="Stories: erase one for good.", no_args_is_help=True)


@incident_cli.command("erase")
def erase(
    incident_id: Annotated[int, typer.Argument(help="The story's id")],
    reason: Annotated[str, typer.Option(help="Why (kept in the audit trail, without the text)")],
) -> None:
    """Erase a story: text, suggestions, codings, spans and memos; reports follow at once."""
    _settings, factory = ready()
    try:
        with session_scope(factory) as session:
            erased = service.erase_incident(session, incident_id, reason=reason, actor=None)
    except AppError as exc:
        fail(exc.detail)
    typer.echo(
        f"incident {erased.incident_id} erased; {erased.models_marked} trained model(s) had "
        "learnt from it and are marked (retrain to forget it)"
    )
