"""Webhooks: the outbox of events, the subscriptions, their deliveries and the delivery log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, JSONType, utcnow

# A delivery is `pending` (waiting for its turn), `queued` (a job will send it), `delivered` or
# `failed` (given up after the last attempt). The first two are "open": a story's next event
# waits until its earlier ones are no longer open.
DELIVERY_STATUSES = ("pending", "queued", "delivered", "failed")
OPEN_DELIVERY = "status IN ('pending', 'queued')"
NOT_DISPATCHED = "dispatched_at IS NULL"


class WebhookEvent(Base):
    """The outbox: one row per event, written in the transaction that made the change (so an
    event exists if and only if the change committed). The worker fans each out to the
    subscriptions that want it; an event nobody wanted is deleted then."""

    __tablename__ = "webhook_events"
    __table_args__ = (
        Index(
            "ix_webhook_events_undispatched",
            "id",
            sqlite_where=text(NOT_DISPATCHED),
            postgresql_where=text(NOT_DISPATCHED),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    event_type: Mapped[str] = mapped_column(String(32))
    # No foreign keys: an event outlives an erased story (story.erased names it).
    survey_id: Mapped[int | None]
    story_id: Mapped[int | None]
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    dispatched_at: Mapped[datetime | None]


class WebhookSubscription(Base):
    __tablename__ = "webhook_subscriptions"

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(String(2000))
    description: Mapped[str] = mapped_column(String(200), default="")
    events: Mapped[list[str]] = mapped_column(JSONType)
    # The HMAC key, encrypted (app.encryption.WEBHOOK_SECRETS: `enc:v1:` and a Fernet token
    # under CIT_WEBHOOK_SECRET_KEYS). The service must read it to sign, so it cannot be hashed;
    # nothing but the signing and the re-encryption decrypts it.
    secret_ciphertext: Mapped[str] = mapped_column(Text)
    include_text: Mapped[bool] = mapped_column(default=False)
    active: Mapped[bool] = mapped_column(default=True)
    consecutive_failures: Mapped[int] = mapped_column(default=0)
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    disabled_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class WebhookDelivery(Base):
    """One event for one subscription, through its attempts."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'queued', 'delivered', 'failed')", name="status"),
        Index("ix_webhook_deliveries_subscription_id_id", "subscription_id", "id"),
        # The open deliveries of a story, in event order: what `promote` asks about. Small
        # however many were delivered.
        Index(
            "ix_webhook_deliveries_open",
            "subscription_id",
            "story_id",
            "event_id",
            sqlite_where=text(OPEN_DELIVERY),
            postgresql_where=text(OPEN_DELIVERY),
        ),
        Index(
            "ix_webhook_deliveries_pending",
            "id",
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    subscription_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_subscriptions.id", ondelete="CASCADE")
    )
    event_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_events.id", ondelete="CASCADE"), index=True
    )
    story_id: Mapped[int | None]
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    last_response_code: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    delivered_at: Mapped[datetime | None]


class WebhookAttempt(Base):
    """The delivery log: one row per HTTP attempt (no response body beyond a short excerpt)."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True
    )
    attempt: Mapped[int]
    at: Mapped[datetime] = mapped_column(default=utcnow)
    outcome: Mapped[str] = mapped_column(String(16))  # delivered, http_error, timeout, error
    response_code: Mapped[int | None]
    duration_ms: Mapped[int]
    error: Mapped[str | None] = mapped_column(String(500))
    response_excerpt: Mapped[str | None] = mapped_column(String(200))
