"""`cit cases ...` (list, status, note, open-due, rotate-keys, new-key) and `cit alerts ...`
(rules, add-rule, list, evaluate)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from app.alerts import service as alerts
from app.alerts.schemas import AlertRuleCreate
from app.cases import crypto, service
from app.cli_support import fail, ready
from app.db import session_scope
from app.errors import AppError

cases_cli = typer.Typer(help="Follow-up cases of dissatisfied respondents.", no_args_is_help=True)
alerts_cli = typer.Typer(help="Alert rules on trends and fired alerts.", no_args_is_help=True)


@cases_cli.command("list")
def list_cases(
    status: Annotated[str | None, typer.Option(help="open, contacted or resolved")] = None,
    survey_id: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Cases as JSON lines (without contacts)."""
    _settings, factory = ready()
    with session_scope(factory, write=False) as session:
        items, _ = service.list_cases(
            session,
            status=status,  # type: ignore[arg-type]
            survey_id=survey_id,
            limit=10_000,
        )
    for item in items:
        typer.echo(item.model_dump_json())


@cases_cli.command("status")
def set_status(
    case_id: Annotated[int, typer.Argument()],
    status: Annotated[str, typer.Argument(help="open, contacted or resolved")],
) -> None:
    settings, factory = ready()
    if status not in ("open", "contacted", "resolved"):
        fail("status must be open, contacted or resolved")
    try:
        with session_scope(factory) as session:
            case = service.set_status(session, settings, case_id, status, None)  # type: ignore[arg-type]
    except AppError as exc:
        fail(exc.detail)
    typer.echo(f"case {case.id}: {case.status}")


@cases_cli.command("note")
def add_note(
    case_id: Annotated[int, typer.Argument()], text: Annotated[str, typer.Argument()]
) -> None:
    _settings, factory = ready()
    try:
        with session_scope(factory) as session:
            note = service.add_note(session, case_id, text.strip(), None)
    except AppError as exc:
        fail(exc.detail)
    typer.echo(f"note {note.id} added to case {case_id}")


@cases_cli.command("open-due")
def open_due() -> None:
    """Open the cases that are due now (the worker does this every round)."""
    _settings, factory = ready()
    with session_scope(factory) as session:
        opened = service.open_due_cases(session)
    typer.echo(f"{len(opened)} case(s) opened")


@cases_cli.command("rotate-keys")
def rotate_keys() -> None:
    """Re-encrypt every contact with the first key of CIT_CONTACT_KEYS."""
    settings, factory = ready()
    try:
        with session_scope(factory) as session:
            count = service.rotate_keys(session, settings)
    except AppError as exc:
        fail(exc.detail)
    typer.echo(f"{count} contact(s) re-encrypted with the first key")


@cases_cli.command("new-key")
def new_key() -> None:
    """Print a new Fernet key for CIT_CONTACT_KEYS (put it first to rotate)."""
    typer.echo(crypto.new_key())


@alerts_cli.command("rules")
def list_rules(survey_id: Annotated[int | None, typer.Option()] = None) -> None:
    _settings, factory = ready()
    with session_scope(factory, write=False) as session:
        for rule in alerts.list_rules(session, survey_id):
            typer.echo(alerts.rule_read(rule).model_dump_json())


@alerts_cli.command("add-rule")
def add_rule(
    rule: Annotated[str, typer.Argument(help='JSON, e.g. {"survey_id": 1, "name": "...", ...}')],
) -> None:
    """Add a rule (the fields of POST /api/v1/alert-rules, as JSON)."""
    _settings, factory = ready()
    try:
        data = AlertRuleCreate.model_validate(json.loads(rule))
    except ValueError as exc:
        fail(str(exc))
    try:
        with session_scope(factory) as session:
            created = alerts.create_rule(session, data, None)
            typer.echo(f"rule {created.id} created")
    except AppError as exc:
        fail(exc.detail)


@alerts_cli.command("list")
def list_alerts(survey_id: Annotated[int | None, typer.Option()] = None) -> None:
    """Fired alerts as JSON lines (with every figure: the command line is an operator's)."""
    _settings, factory = ready()
    with session_scope(factory, write=False) as session:
        items, _ = alerts.list_alerts(session, reveal=True, survey_id=survey_id, limit=10_000)
    for item in items:
        typer.echo(item.model_dump_json())


@alerts_cli.command("fold")
def fold() -> None:
    """Fold the report deltas and evaluate the rules they touch (what the worker does)."""
    settings, factory = ready()
    with session_scope(factory) as session:
        folded, fired = alerts.fold_and_evaluate(session, settings)
    typer.echo(f"{folded} delta row(s) folded, {fired} alert(s) fired")
