"""Webhook subscriptions (admins): create, read, change, delete; the delivery log; redelivery."""

from __future__ import annotations

import contextlib
import secrets
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app import audit, encryption
from app.auth import Principal
from app.config import Settings
from app.encryption import WEBHOOK_SECRETS
from app.errors import Conflict, Invalid, NotFound
from app.models import WebhookAttempt, WebhookDelivery, WebhookEvent, WebhookSubscription
from app.models.base import utcnow
from app.pagination import decode_cursor, encode_cursor
from app.webhooks import addresses
from app.webhooks.schemas import (
    AttemptRead,
    DeliveryDetail,
    DeliveryPage,
    DeliveryRead,
    WebhookCreate,
    WebhookPage,
    WebhookRead,
    WebhookUpdate,
    WebhookWithSecret,
)

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def to_read(subscription: WebhookSubscription) -> WebhookRead:
    return WebhookRead.model_validate(subscription, from_attributes=True)


def _summary(subscription: WebhookSubscription) -> dict[str, Any]:
    """What the audit trail keeps of a subscription: never its secret."""
    return {
        "url": subscription.url,
        "events": list(subscription.events),
        "include_text": subscription.include_text,
        "active": subscription.active,
    }


def _check_url(url: str, allow_private: bool) -> None:
    """localhost and literal non-public addresses are refused at once (400); host names are
    resolved and checked at every delivery (app.webhooks.addresses)."""
    if not allow_private:
        try:
            addresses.check_url(url)
        except addresses.Refused as error:
            raise Invalid(str(error)) from None


def create_subscription(
    session: Session,
    settings: Settings,
    data: WebhookCreate,
    actor: Principal | None,
    *,
    allow_private: bool = False,
) -> WebhookWithSecret:
    _check_url(str(data.url), allow_private)
    secret = data.secret or new_secret()
    subscription = WebhookSubscription(
        url=str(data.url),
        description=data.description,
        events=list(dict.fromkeys(data.events)),
        secret_ciphertext=encryption.encrypt(settings, WEBHOOK_SECRETS, secret),
        include_text=data.include_text,
        active=data.active,
        consecutive_failures=0,
    )
    session.add(subscription)
    session.flush()
    audit.record(
        session,
        actor,
        "webhook.create",
        "webhook",
        subscription.id,
        after=_summary(subscription),
    )
    return WebhookWithSecret(**to_read(subscription).model_dump(), secret=secret)


def get_subscription(session: Session, subscription_id: int) -> WebhookSubscription:
    found = session.get(WebhookSubscription, subscription_id)
    if found is None:
        raise NotFound(f"webhook subscription {subscription_id} does not exist")
    return found


def list_subscriptions(session: Session, cursor: str | None, limit: int) -> WebhookPage:
    query = select(WebhookSubscription)
    after = decode_cursor(cursor)
    if after is not None:
        query = query.where(WebhookSubscription.id > after)
    rows = list(session.scalars(query.order_by(WebhookSubscription.id).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return WebhookPage(
        items=[to_read(r) for r in rows],
        next_cursor=encode_cursor(rows[-1].id) if more else None,
    )


def update_subscription(
    session: Session,
    settings: Settings,
    subscription_id: int,
    data: WebhookUpdate,
    actor: Principal | None,
    *,
    allow_private: bool = False,
) -> WebhookRead | WebhookWithSecret:
    subscription = get_subscription(session, subscription_id)
    before = _summary(subscription)
    if data.url is not None:
        _check_url(str(data.url), allow_private)
        subscription.url = str(data.url)
    if data.events is not None:
        subscription.events = list(dict.fromkeys(data.events))
    if data.description is not None:
        subscription.description = data.description
    if data.include_text is not None:
        subscription.include_text = data.include_text
    if data.active is not None:
        if data.active and not subscription.active:
            # Enabled again by an admin: a fresh start; its waiting deliveries go out in order.
            subscription.consecutive_failures = 0
            subscription.disabled_reason = None
            subscription.disabled_at = None
        subscription.active = data.active
    secret = new_secret() if data.rotate_secret else None
    if secret is not None:
        subscription.secret_ciphertext = encryption.encrypt(settings, WEBHOOK_SECRETS, secret)
    subscription.updated_at = utcnow()
    session.flush()
    audit.record(
        session,
        actor,
        "webhook.update",
        "webhook",
        subscription.id,
        before=before,
        after={**_summary(subscription), "secret_rotated": data.rotate_secret},
    )
    read = to_read(subscription)
    if secret is not None:
        return WebhookWithSecret(**read.model_dump(), secret=secret)
    return read


def signing_secret(settings: Settings, subscription: WebhookSubscription) -> str:
    """The subscription's secret in clear, to sign with; encryption.CannotDecrypt (a message
    without the secret) when no configured key opens it."""
    return encryption.decrypt(settings, WEBHOOK_SECRETS, subscription.secret_ciphertext)


def rotate_keys(session: Session, settings: Settings) -> int:
    """Re-encrypt every subscription's secret with the first key of CIT_WEBHOOK_SECRET_KEYS;
    returns how many. All or nothing: when no key opens some secret, nothing is written and the
    error names the subscriptions (Invalid). `updated_at` stays: the subscription is as it was."""
    subscription = WebhookSubscription
    rows = session.execute(
        select(subscription.id, subscription.secret_ciphertext)
        .order_by(subscription.id)
        .with_for_update()
    ).all()
    rotated: dict[int, str] = {}
    for subscription_id, stored in rows:
        with contextlib.suppress(encryption.CannotDecrypt):
            rotated[subscription_id] = encryption.rotate(settings, WEBHOOK_SECRETS, stored)
    unopened = [subscription_id for subscription_id, _ in rows if subscription_id not in rotated]
    if unopened:
        raise Invalid(
            f"no key of {WEBHOOK_SECRETS.env} (nor the one derived from CIT_SECRET_KEY) opens "
            f"the secret of webhook subscription(s) {', '.join(map(str, unopened))}; nothing "
            "was re-encrypted: put back the key they were encrypted with, or give those "
            "subscriptions a new secret (`cit webhooks update ID --rotate-secret`)"
        )
    for subscription_id, token in rotated.items():
        session.execute(
            update(subscription)
            .where(subscription.id == subscription_id)
            .values(secret_ciphertext=token, updated_at=subscription.updated_at)
            .execution_options(synchronize_session=False)
        )
    return len(rows)


def delete_subscription(session: Session, subscription_id: int, actor: Principal | None) -> None:
    subscription = get_subscription(session, subscription_id)
    summary = _summary(subscription)
    session.delete(subscription)  # its deliveries and their log go by ON DELETE CASCADE
    session.flush()
    audit.record(session, actor, "webhook.delete", "webhook", subscription_id, before=summary)


def _delivery_read(delivery: WebhookDelivery, event_type: str) -> DeliveryRead:
    return DeliveryRead(
        id=delivery.id,
        subscription_id=delivery.subscription_id,
        event_id=delivery.event_id,
        event_type=event_type,
        story_id=delivery.story_id,
        status=delivery.status,  # type: ignore[arg-type]
        attempts=delivery.attempts,
        last_response_code=delivery.last_response_code,
        last_error=delivery.last_error,
        created_at=delivery.created_at,
        updated_at=delivery.updated_at,
        delivered_at=delivery.delivered_at,
    )


def list_deliveries(
    session: Session,
    subscription_id: int,
    *,
    status: str | None,
    cursor: str | None,
    limit: int,
) -> DeliveryPage:
    """Newest first (the log an admin reads after a failure)."""
    get_subscription(session, subscription_id)
    query = (
        select(WebhookDelivery, WebhookEvent.event_type)
        .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
        .where(WebhookDelivery.subscription_id == subscription_id)
    )
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    before = decode_cursor(cursor)
    if before is not None:
        query = query.where(WebhookDelivery.id < before)
    rows = session.execute(query.order_by(WebhookDelivery.id.desc()).limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return DeliveryPage(
        items=[_delivery_read(d, t) for d, t in rows],
        next_cursor=encode_cursor(rows[-1][0].id) if more else None,
    )


def _get_delivery(
    session: Session, subscription_id: int, delivery_id: int
) -> tuple[WebhookDelivery, str]:
    row = session.execute(
        select(WebhookDelivery, WebhookEvent.event_type)
        .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
        .where(
            WebhookDelivery.id == delivery_id, WebhookDelivery.subscription_id == subscription_id
        )
    ).first()
    if row is None:
        raise NotFound(f"webhook {subscription_id} has no delivery {delivery_id}")
    return row[0], row[1]


def get_delivery(session: Session, subscription_id: int, delivery_id: int) -> DeliveryDetail:
    delivery, event_type = _get_delivery(session, subscription_id, delivery_id)
    attempts = session.scalars(
        select(WebhookAttempt)
        .where(WebhookAttempt.delivery_id == delivery.id)
        .order_by(WebhookAttempt.id)
    )
    return DeliveryDetail(
        **_delivery_read(delivery, event_type).model_dump(),
        log=[AttemptRead.model_validate(a, from_attributes=True) for a in attempts],
    )


def redeliver(
    session: Session, subscription_id: int, delivery_id: int, actor: Principal | None
) -> DeliveryRead:
    """Send a delivered or given-up delivery again (it joins its story's queue in event order;
    the next worker round queues it)."""
    delivery, event_type = _get_delivery(session, subscription_id, delivery_id)
    if delivery.status not in ("delivered", "failed"):
        raise Conflict(
            f"delivery {delivery_id} is {delivery.status}: it will be sent, there is nothing "
            "to redeliver yet"
        )
    delivery.status = "pending"
    delivery.updated_at = utcnow()
    session.flush()
    audit.record(
        session,
        actor,
        "webhook.redeliver",
        "webhook",
        subscription_id,
        after={"delivery_id": delivery_id, "event_id": delivery.event_id},
    )
    return _delivery_read(delivery, event_type)
