"""API models of webhook subscriptions and deliveries."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, StrictBool, field_validator

from app.encryption import WEBHOOK_SECRETS
from app.webhooks.events import EVENT_TYPES

EventType = Literal[
    "story.received",
    "story.redacted",
    "suggestions.ready",
    "coding.saved",
    "story.final",
    "story.erased",
    "alert.fired",
    "model.activated",
]
assert set(EventType.__args__) == set(EVENT_TYPES)  # type: ignore[attr-defined]


def _url(value: AnyHttpUrl | str) -> str:
    text = str(value)
    if len(text) > 2000:
        raise ValueError("the URL is longer than 2000 characters")
    return text


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: AnyHttpUrl
    events: list[EventType] = Field(min_length=1)
    description: str = Field("", max_length=200)
    secret: str | None = Field(
        None,
        min_length=16,
        max_length=200,
        description="HMAC key for the signatures; generated (and shown once) when not given",
    )
    include_text: StrictBool = Field(
        False, description="deliveries may carry the story's redacted text (never the original)"
    )
    active: StrictBool = True

    @field_validator("url")
    @classmethod
    def _short(cls, value: AnyHttpUrl) -> AnyHttpUrl:
        _url(value)
        return value

    @field_validator("secret")
    @classmethod
    def _not_marked(cls, value: str | None) -> str | None:
        # The marker of an encrypted secret: a clear one that starts with it would be taken
        # for ciphertext by the migrations.
        if value is not None and value.startswith(WEBHOOK_SECRETS.marker):
            raise ValueError(f"the secret must not start with {WEBHOOK_SECRETS.marker!r}")
        return value


class WebhookUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: AnyHttpUrl | None = None
    events: list[EventType] | None = Field(None, min_length=1)
    description: str | None = Field(None, max_length=200)
    include_text: StrictBool | None = None
    active: StrictBool | None = Field(
        None, description="true enables a disabled subscription again (its failures reset)"
    )
    rotate_secret: StrictBool = Field(False, description="generate a new secret (shown once)")

    @field_validator("url")
    @classmethod
    def _short(cls, value: AnyHttpUrl | None) -> AnyHttpUrl | None:
        if value is not None:
            _url(value)
        return value


class WebhookRead(BaseModel):
    id: int
    url: str
    description: str
    events: list[str]
    include_text: bool
    active: bool
    consecutive_failures: int
    disabled_reason: str | None
    disabled_at: datetime | None
    created_at: datetime
    updated_at: datetime


class WebhookWithSecret(WebhookRead):
    secret: str = Field(description="shown once: keep it to verify the CIT-Signature header")


class WebhookPage(BaseModel):
    items: list[WebhookRead]
    next_cursor: str | None


class AttemptRead(BaseModel):
    attempt: int
    at: datetime
    outcome: Literal["delivered", "http_error", "timeout", "error"]
    response_code: int | None
    duration_ms: int
    error: str | None
    response_excerpt: str | None


class DeliveryRead(BaseModel):
    id: int
    subscription_id: int
    event_id: int
    event_type: str
    story_id: int | None
    status: Literal["pending", "queued", "delivered", "failed"]
    attempts: int
    last_response_code: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None


class DeliveryDetail(DeliveryRead):
    log: list[AttemptRead]


class DeliveryPage(BaseModel):
    items: list[DeliveryRead]
    next_cursor: str | None
