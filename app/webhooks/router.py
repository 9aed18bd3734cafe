"""Webhook API (admins): subscriptions, their delivery log, redelivery."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request, Response

from app.auth import RequireAdmin
from app.config import app_settings
from app.db import SessionDep
from app.errors import Conflict, Forbidden, NotFound, problem_responses
from app.pagination import PageSize
from app.webhooks import service
from app.webhooks.schemas import (
    DeliveryDetail,
    DeliveryPage,
    DeliveryRead,
    WebhookCreate,
    WebhookPage,
    WebhookRead,
    WebhookUpdate,
    WebhookWithSecret,
)

router = APIRouter(
    prefix="/api/v1/webhooks", tags=["webhooks"], responses=problem_responses(Forbidden)
)


@router.post("", status_code=201, response_model=WebhookWithSecret)
def create_webhook(
    data: WebhookCreate, request: Request, session: SessionDep, user: RequireAdmin
) -> WebhookWithSecret:
    """Subscribe a URL to events; the response shows the signing secret, once. Only public
    addresses unless the operator allows others (`CIT_WEBHOOK_ALLOW_PRIVATE_ADDRESSES`)."""
    settings = app_settings(request)
    return service.create_subscription(
        session, settings, data, user, allow_private=settings.webhook_allow_private_addresses
    )


@router.get("", response_model=WebhookPage)
def list_webhooks(
    session: SessionDep, _user: RequireAdmin, size: PageSize, cursor: str | None = None
) -> WebhookPage:
    return service.list_subscriptions(session, cursor, size)


@router.get("/{webhook_id:int}", response_model=WebhookRead, responses=problem_responses(NotFound))
def read_webhook(webhook_id: int, session: SessionDep, _user: RequireAdmin) -> WebhookRead:
    return service.to_read(service.get_subscription(session, webhook_id))


@router.patch(
    "/{webhook_id:int}",
    response_model=WebhookRead | WebhookWithSecret,
    responses=problem_responses(NotFound),
)
def update_webhook(
    webhook_id: int,
    data: WebhookUpdate,
    request: Request,
    session: SessionDep,
    user: RequireAdmin,
) -> WebhookRead | WebhookWithSecret:
    """Change a subscription; `active: true` enables a disabled one again, `rotate_secret`
    returns the new secret (once)."""
    settings = app_settings(request)
    return service.update_subscription(
        session,
        settings,
        webhook_id,
        data,
        user,
        allow_private=settings.webhook_allow_private_addresses,
    )


@router.delete("/{webhook_id:int}", status_code=204, responses=problem_responses(NotFound))
def delete_webhook(webhook_id: int, session: SessionDep, user: RequireAdmin) -> Response:
    service.delete_subscription(session, webhook_id, user)
    return Response(status_code=204)


@router.get(
    "/{webhook_id:int}/deliveries",
    response_model=DeliveryPage,
    responses=problem_responses(NotFound),
)
def list_deliveries(
    webhook_id: int,
    session: SessionDep,
    _user: RequireAdmin,
    size: PageSize,
    status: Literal["pending", "queued", "delivered", "failed"] | None = None,
    cursor: str | None = None,
) -> DeliveryPage:
    """The subscription's deliveries, newest first."""
    return service.list_deliveries(session, webhook_id, status=status, cursor=cursor, limit=size)


@router.get(
    "/{webhook_id:int}/deliveries/{delivery_id:int}",
    response_model=DeliveryDetail,
    responses=problem_responses(NotFound),
)
def read_delivery(
    webhook_id: int, delivery_id: int, session: SessionDep, _user: RequireAdmin
) -> DeliveryDetail:
    """One delivery with its log: every attempt's outcome, response code, duration, error."""
    return service.get_delivery(session, webhook_id, delivery_id)


@router.post(
    "/{webhook_id:int}/deliveries/{delivery_id:int}/redeliver",
    response_model=DeliveryRead,
    responses=problem_responses(NotFound, Conflict),
)
def redeliver(
    webhook_id: int, delivery_id: int, session: SessionDep, user: RequireAdmin
) -> DeliveryRead:
    """Send a delivered or failed delivery again."""
    return service.redeliver(session, webhook_id, delivery_id, user)
