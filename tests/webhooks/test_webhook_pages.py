"""The admin's webhooks page: subscribe (secret shown once), the disabled reason, the delivery
log and redelivery; CSRF and roles hold."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from app.config import Settings
from app.models import WebhookDelivery, WebhookSubscription
from app.webhooks.delivery import WebhookDispatcher
from app.webhooks.schemas import WebhookUpdate
from app.webhooks.service import signing_secret, update_subscription
from tests.webhooks.conftest import Receiver
from tests.workbench.conftest import Browser, browser  # noqa: F401 - fixture


def test_the_webhooks_page(
    browser: Callable[..., Browser],  # noqa: F811 - the fixture imported above
    client: Any,
    survey: Any,
    db: Callable[[], Any],
    receiver: Receiver,
    dispatcher: Callable[..., WebhookDispatcher],
    settings: Settings,
) -> None:
    admin = browser("admin")
    created = admin.post(
        "/work/webhooks",
        {"url": receiver.url(), "events": ["story.received", "story.final"], "description": "CRM"},
    )
    assert created.status_code == 200 and "shown only now" in created.text
    secret = created.text.split('id="new-secret" class="copy" type="text" readonly value="')[1]
    secret = secret.split('"')[0]
    assert secret.startswith("whsec_")
    listing = admin.page("/work/webhooks")
    assert receiver.url() in listing and secret not in listing and "story.final" in listing
    with db() as session:
        hook = session.scalars(select(WebhookSubscription)).one()
        assert hook.events == ["story.received", "story.final"]
        assert secret not in hook.secret_ciphertext
        assert signing_secret(settings, hook) == secret

    refused = admin.post("/work/webhooks", {"url": "not a url", "events": ["story.final"]})
    assert refused.status_code == 400 and "url" in refused.text
    no_csrf = admin.client.post(
        "/work/webhooks", data={"url": receiver.url(), "events": ["story.final"]}
    )
    assert no_csrf.status_code == 403

    # A delivery, then the subscription is disabled: the page says why.
    response = client.post(
        f"/api/v1/public/surveys/{survey.slug}/incidents",
        json={"what_happened": "The bag came back.", "valence": "satisfying"},
    )
    assert response.status_code == 201
    dispatcher().drain()
    with db() as session:
        delivery_id = session.scalars(select(WebhookDelivery.id)).one()
        update_subscription(session, settings, hook.id, WebhookUpdate(active=False), None)
        session.get(WebhookSubscription, hook.id).disabled_reason = "20 failed in a row"  # type: ignore[union-attr]
    assert "20 failed in a row" in admin.page("/work/webhooks")
    log = admin.page(f"/work/webhooks/{hook.id}")
    assert "story.received" in log and "delivered" in log and "Redeliver" in log
    again = admin.post(
        f"/work/webhooks/{hook.id}/deliveries/{delivery_id}/redeliver",
        {},
        from_page=f"/work/webhooks/{hook.id}",
    )
    assert again.status_code == 303
    with db() as session:
        assert session.get(WebhookDelivery, delivery_id).status == "pending"  # type: ignore[union-attr]

    enabled = admin.post(
        f"/work/webhooks/{hook.id}/active", {"active": "1"}, from_page="/work/webhooks"
    )
    assert enabled.status_code == 303
    with db() as session:
        assert session.get(WebhookSubscription, hook.id).active is True  # type: ignore[union-attr]
    gone = admin.post(f"/work/webhooks/{hook.id}/delete", {}, from_page="/work/webhooks")
    assert gone.status_code == 303
    assert receiver.url() not in admin.page("/work/webhooks")

    researcher = browser("researcher")
    page = researcher.client.get("/work/webhooks")
    assert page.status_code == 403 and "text/html" in page.headers["content-type"]
