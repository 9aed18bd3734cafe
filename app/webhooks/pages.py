"""The admin's webhooks page: subscriptions (create with the secret shown once, enable, disable,
delete) and one subscription's delivery log with redelivery. Same service calls as the API."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from app.auth import Principal, RequireAdmin
from app.config import app_settings
from app.db import SessionDep
from app.errors import AppError
from app.pages import FormDep, render, see_other
from app.webhooks import service
from app.webhooks.events import EVENT_TYPES
from app.webhooks.schemas import WebhookCreate, WebhookUpdate

router = APIRouter(include_in_schema=False)


def _list_page(
    request: Request,
    session: SessionDep,
    user: Principal,
    *,
    created: dict[str, str] | None = None,
    error: str | None = None,
    values: dict[str, object] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    return render(
        request,
        "wb_webhooks.html",
        {
            "webhooks": service.list_subscriptions(session, None, 500).items,
            "event_types": EVENT_TYPES,
            "created": created,
            "error": error,
            "values": values or {"url": "", "events": list(EVENT_TYPES), "include_text": False},
        },
        user=user,
        current="/work/webhooks",
        status_code=status_code,
    )


@router.get("/work/webhooks", response_class=HTMLResponse)
def webhooks(request: Request, session: SessionDep, user: RequireAdmin) -> Response:
    return _list_page(request, session, user)


@router.post("/work/webhooks", response_class=HTMLResponse)
def create(request: Request, form: FormDep, session: SessionDep, user: RequireAdmin) -> Response:
    values: dict[str, object] = {
        "url": form.get("url").strip(),
        "events": form.getlist("events"),
        "include_text": form.get("include_text") == "on",
        "description": form.get("description").strip(),
    }
    try:
        data = WebhookCreate.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"][:1])
        return _list_page(
            request,
            session,
            user,
            error=f"{field}: {first['msg']}",
            values=values,
            status_code=400,
        )
    settings = app_settings(request)
    try:
        created = service.create_subscription(
            session,
            settings,
            data,
            user,
            allow_private=settings.webhook_allow_private_addresses,
        )
    except AppError as exc:
        return _list_page(
            request, session, user, error=exc.detail, values=values, status_code=exc.status
        )
    return _list_page(
        request, session, user, created={"url": created.url, "secret": created.secret}
    )


@router.post("/work/webhooks/{webhook_id:int}/active", response_class=HTMLResponse)
def set_active(
    webhook_id: int, request: Request, form: FormDep, session: SessionDep, user: RequireAdmin
) -> Response:
    data = WebhookUpdate(active=form.get("active") == "1")
    try:
        service.update_subscription(session, app_settings(request), webhook_id, data, user)
    except AppError as exc:
        return _list_page(request, session, user, error=exc.detail, status_code=exc.status)
    return see_other("/work/webhooks")


@router.post("/work/webhooks/{webhook_id:int}/delete", response_class=HTMLResponse)
def delete(webhook_id: int, request: Request, session: SessionDep, user: RequireAdmin) -> Response:
    try:
        service.delete_subscription(session, webhook_id, user)
    except AppError as exc:
        return _list_page(request, session, user, error=exc.detail, status_code=exc.status)
    return see_other("/work/webhooks")


def _deliveries_page(
    request: Request,
    session: SessionDep,
    user: Principal,
    webhook_id: int,
    *,
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    webhook = service.to_read(service.get_subscription(session, webhook_id))
    deliveries = service.list_deliveries(session, webhook_id, status=None, cursor=None, limit=100)
    return render(
        request,
        "wb_webhook.html",
        {"webhook": webhook, "deliveries": deliveries.items, "error": error},
        user=user,
        current="/work/webhooks",
        status_code=status_code,
    )


@router.get("/work/webhooks/{webhook_id:int}", response_class=HTMLResponse)
def deliveries(
    webhook_id: int, request: Request, session: SessionDep, user: RequireAdmin
) -> Response:
    return _deliveries_page(request, session, user, webhook_id)


@router.post(
    "/work/webhooks/{webhook_id:int}/deliveries/{delivery_id:int}/redeliver",
    response_class=HTMLResponse,
)
def redeliver(
    webhook_id: int, delivery_id: int, request: Request, session: SessionDep, user: RequireAdmin
) -> Response:
    try:
        service.redeliver(session, webhook_id, delivery_id, user)
    except AppError as exc:
        return _deliveries_page(
            request, session, user, webhook_id, error=exc.detail, status_code=exc.status
        )
    return see_other(f"/work/webhooks/{webhook_id}")
