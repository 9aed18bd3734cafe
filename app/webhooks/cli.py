"""`cit webhooks ...`: subscriptions, their delivery log and redelivery from the command line;
the keys that encrypt the signing secrets (new-key, rotate-keys)."""

from __future__ import annotations

from typing import Annotated

import typer
from pydantic import ValidationError

from app import encryption
from app.cli_support import fail, ready
from app.db import session_scope
from app.errors import AppError
from app.webhooks import service
from app.webhooks.events import EVENT_TYPES
from app.webhooks.schemas import WebhookCreate, WebhookRead, WebhookUpdate

webhooks_cli = typer.Typer(help="Webhook subscriptions and deliveries.", no_args_is_help=True)

EventsOption = Annotated[
    str | None,
    typer.Option(help=f"comma-separated event types: {', '.join(EVENT_TYPES)}"),
]


def _events(value: str | None) -> list[str] | None:
    return [e.strip() for e in value.split(",") if e.strip()] if value else None


def _line(webhook: WebhookRead) -> str:
    state = "active" if webhook.active else f"DISABLED ({webhook.disabled_reason or 'by an admin'})"
    text = " +text" if webhook.include_text else ""
    return f"{webhook.id}\t{webhook.url}\t{','.join(webhook.events)}{text}\t{state}"


@webhooks_cli.command("create")
def create(
    url: Annotated[str, typer.Argument(help="Where to POST the events")],
    events: EventsOption = None,
    description: Annotated[str, typer.Option()] = "",
    include_text: Annotated[
        bool, typer.Option(help="deliveries carry the story's redacted text")
    ] = False,
) -> None:
    """Subscribe a URL; prints the signing secret (shown once)."""
    settings, factory = ready()
    try:
        data = WebhookCreate.model_validate(
            {
                "url": url,
                "events": _events(events) or list(EVENT_TYPES),
                "description": description,
                "include_text": include_text,
            }
        )
        with session_scope(factory) as session:
            created = service.create_subscription(
                session,
                settings,
                data,
                None,
                allow_private=settings.webhook_allow_private_addresses,
            )
    except ValidationError as exc:
        fail(exc.errors()[0]["msg"])
        return
    except AppError as exc:
        fail(exc.detail)
        return
    typer.echo(_line(created))
    typer.echo(f"secret (shown once): {created.secret}")


@webhooks_cli.command("list")
def list_() -> None:
    """Every subscription, with why it is disabled if it is."""
    _settings, factory = ready()
    with session_scope(factory, write=False) as session:
        cursor: str | None = None
        while True:
            page = service.list_subscriptions(session, cursor, 500)
            for webhook in page.items:
                typer.echo(_line(webhook))
            if page.next_cursor is None:
                break
            cursor = page.next_cursor


@webhooks_cli.command("update")
def update(
    webhook_id: int,
    url: Annotated[str | None, typer.Option()] = None,
    events: EventsOption = None,
    include_text: Annotated[bool | None, typer.Option("--include-text/--no-text")] = None,
    enable: Annotated[
        bool | None, typer.Option("--enable/--disable", help="enable resets the failures")
    ] = None,
    rotate_secret: Annotated[bool, typer.Option(help="print a new secret")] = False,
) -> None:
    """Change a subscription (enable a disabled one again, rotate its secret, ...)."""
    settings, factory = ready()
    try:
        data = WebhookUpdate.model_validate(
            {
                "url": url,
                "events": _events(events),
                "include_text": include_text,
                "active": enable,
                "rotate_secret": rotate_secret,
            }
        )
        with session_scope(factory) as session:
            updated = service.update_subscription(
                session,
                settings,
                webhook_id,
                data,
                None,
                allow_private=settings.webhook_allow_private_addresses,
            )
    except ValidationError as exc:
        fail(exc.errors()[0]["msg"])
        return
    except AppError as exc:
        fail(exc.detail)
        return
    typer.echo(_line(updated))
    secret = getattr(updated, "secret", None)
    if secret:
        typer.echo(f"secret (shown once): {secret}")


@webhooks_cli.command("delete")
def delete(webhook_id: int) -> None:
    """Delete a subscription with its delivery log."""
    _settings, factory = ready()
    try:
        with session_scope(factory) as session:
            service.delete_subscription(session, webhook_id, None)
    except AppError as exc:
        fail(exc.detail)
    typer.echo(f"webhook {webhook_id} deleted")


@webhooks_cli.command("deliveries")
def deliveries(
    webhook_id: int,
    status: Annotated[str | None, typer.Option(help="pending, queued, delivered, failed")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
) -> None:
    """The latest deliveries: id, event, story, status, attempts, last response or error."""
    _settings, factory = ready()
    try:
        with session_scope(factory, write=False) as session:
            page = service.list_deliveries(
                session, webhook_id, status=status, cursor=None, limit=limit
            )
    except AppError as exc:
        fail(exc.detail)
        return
    for d in page.items:
        last = d.last_response_code or d.last_error or ""
        typer.echo(
            f"{d.id}\t{d.event_type}\tstory {d.story_id or '-'}\t{d.status}\t"
            f"{d.attempts} attempt(s)\t{last}"
        )


@webhooks_cli.command("redeliver")
def redeliver(webhook_id: int, delivery_id: int) -> None:
    """Send a delivered or failed delivery again (the worker sends it)."""
    _settings, factory = ready()
    try:
        with session_scope(factory) as session:
            delivery = service.redeliver(session, webhook_id, delivery_id, None)
    except AppError as exc:
        fail(exc.detail)
        return
    typer.echo(f"delivery {delivery.id} ({delivery.event_type}) queued again")


@webhooks_cli.command("rotate-keys")
def rotate_keys() -> None:
    """Re-encrypt every subscription's secret with the first key of CIT_WEBHOOK_SECRET_KEYS."""
    settings, factory = ready()
    try:
        with session_scope(factory) as session:
            count = service.rotate_keys(session, settings)
    except AppError as exc:
        fail(exc.detail)
    typer.echo(f"{count} webhook secret(s) re-encrypted with the first key")


@webhooks_cli.command("new-key")
def new_key() -> None:
    """Print a new Fernet key for CIT_WEBHOOK_SECRET_KEYS (put it first to rotate)."""
    typer.echo(encryption.new_key())
