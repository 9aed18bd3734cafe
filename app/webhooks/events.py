"""Publishing webhook events: one row in the outbox, in the caller's transaction.

`publish` only appends to `webhook_events`; it reads no subscription. The worker fans events
out to the subscriptions that want them (`app.webhooks.delivery.fan_out`), because:

- the hot paths (story intake above all) pay one INSERT and no read, whatever the number of
  subscriptions, and contend for no row;
- an event exists if and only if the change that caused it committed, and its deliveries are
  made from what the subscriptions are when the worker looks (a subscription added, paused or
  deleted a moment ago is honoured without any cache to invalidate in the API processes).

Payloads carry ids and codes, never story text: the redacted text is added at delivery time
for subscriptions marked `include_text`, and only once the story's redaction is done."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, Table, insert
from sqlalchemy.orm import Session

from app.models import WebhookEvent
from app.models.base import utcnow

STORY_RECEIVED = "story.received"
STORY_REDACTED = "story.redacted"
SUGGESTIONS_READY = "suggestions.ready"
CODING_SAVED = "coding.saved"
STORY_FINAL = "story.final"
STORY_ERASED = "story.erased"
ALERT_FIRED = "alert.fired"
MODEL_ACTIVATED = "model.activated"

EVENT_TYPES: tuple[str, ...] = (
    STORY_RECEIVED,
    STORY_REDACTED,
    SUGGESTIONS_READY,
    CODING_SAVED,
    STORY_FINAL,
    STORY_ERASED,
    ALERT_FIRED,
    MODEL_ACTIVATED,
)
# Events whose delivery may carry the story's redacted text (subscriptions with include_text),
# never before the story is redacted: story.received does not, story.erased has none left.
TEXT_EVENTS = frozenset({STORY_REDACTED, SUGGESTIONS_READY, CODING_SAVED, STORY_FINAL})

events_table: Table = WebhookEvent.__table__  # type: ignore[assignment]
INSERT_EVENTS = insert(events_table)


class UnknownEventType(ValueError):
    """A programming error: publish() was called with an event type that does not exist."""


def _row(
    event_type: str, payload: dict[str, Any], survey_id: int | None, story_id: int | None
) -> dict[str, Any]:
    if event_type not in EVENT_TYPES:
        raise UnknownEventType(f"unknown webhook event type {event_type!r}")
    return {
        "event_type": event_type,
        "survey_id": survey_id,
        "story_id": story_id,
        "payload": payload,
        "created_at": utcnow(),
        "dispatched_at": None,
    }


def publish(
    session_or_connection: Session | Connection,
    event_type: str,
    payload: dict[str, Any],
    *,
    survey_id: int | None = None,
    story_id: int | None = None,
) -> None:
    """Record an event in the caller's transaction (it is delivered only if that commits).

    `payload` must be JSON-serialisable and carry ids and codes only (no story text)."""
    session_or_connection.execute(INSERT_EVENTS, [_row(event_type, payload, survey_id, story_id)])


def publish_many(
    session_or_connection: Session | Connection,
    events: Iterable[tuple[str, dict[str, Any], int | None, int | None]],
) -> None:
    """`publish` for many events at once: (event_type, payload, survey_id, story_id) each,
    in one executemany."""
    rows = outbox_rows(events)
    if rows:
        session_or_connection.execute(INSERT_EVENTS, rows)


def outbox_rows(
    events: Iterable[tuple[str, dict[str, Any], int | None, int | None]],
) -> list[dict[str, Any]]:
    """The outbox rows `publish_many` writes, for a caller that writes them with others
    (app.db.WriteBatch)."""
    return [_row(*event) for event in events]
