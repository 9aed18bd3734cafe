"""Webhooks go to public addresses only unless the operator allows others: refused at creation
for localhost and literal non-public addresses, checked after DNS at every delivery, and sent to
the checked address (Host header and TLS name kept)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.config import Settings
from app.main import create_app
from app.models import WebhookAttempt
from app.webhooks import addresses
from app.webhooks.delivery import WebhookDispatcher
from tests.webhooks.conftest import Receiver

NOT_PUBLIC = (
    "http://localhost:8080/hook",
    "http://api.localhost/hook",
    "http://127.0.0.1/hook",
    "http://10.1.2.3/hook",
    "http://192.168.0.10:9000/hook",
    "http://172.16.5.4/hook",
    "http://169.254.169.254/latest/meta-data",  # cloud metadata
    "http://100.64.0.1/hook",  # shared (carrier-grade NAT)
    "http://0.0.0.0/hook",
    "http://[::1]/hook",
    "http://[fe80::1]/hook",
    "http://[fd00::5]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://224.0.0.1/hook",
)


@pytest.mark.parametrize("url", NOT_PUBLIC)
def test_non_public_hosts_are_refused_without_dns(url: str) -> None:
    with pytest.raises(addresses.Refused):
        addresses.check_url(url)
    with pytest.raises(addresses.Refused):
        addresses.resolve(url)


def test_public_literals_pass_and_names_wait_for_dns() -> None:
    addresses.check_url("https://93.184.216.34:8443/hook")
    addresses.check_url("https://hooks.example.org/cit")  # resolved at delivery
    assert addresses.resolve("https://93.184.216.34/x").url == "https://93.184.216.34/x"


def test_a_name_that_resolves_to_this_machine_is_refused_at_delivery() -> None:
    """This machine's own name resolves (through the system's resolver, /etc/hosts) to a
    loopback or private address, or not at all: refused either way."""
    name = socket.gethostname()
    with pytest.raises(addresses.Refused) as refused:
        addresses.resolve(f"http://{name}:9/hook")
    assert name in str(refused.value)


def test_the_request_goes_to_the_checked_address_with_the_host_kept(receiver: Receiver) -> None:
    target = addresses.pin(
        f"http://localhost:{receiver.port}/hook?x=1", ipaddress.ip_address("127.0.0.1")
    )
    assert target.url == f"http://127.0.0.1:{receiver.port}/hook?x=1"
    assert target.extensions == {}
    secure = addresses.pin("https://hooks.example.org/cit", ipaddress.ip_address("93.184.216.34"))
    assert secure.url == "https://93.184.216.34/cit"
    assert secure.headers == {"Host": "hooks.example.org"}
    assert secure.extensions == {"sni_hostname": "hooks.example.org"}
    v6 = addresses.pin("http://hooks.example.org:81/", ipaddress.ip_address("2001:db8::7"))
    assert v6.url == "http://[2001:db8::7]:81/" and v6.headers == {"Host": "hooks.example.org:81"}
    reply = httpx.post(target.url, headers=target.headers, content=b"{}")
    assert reply.status_code == 200
    assert receiver.requests[-1].headers["host"] == f"localhost:{receiver.port}"


def test_the_api_refuses_a_private_url_unless_the_operator_allows_it(
    settings: Settings, admin: dict[str, str]
) -> None:
    strict = create_app(settings.model_copy(update={"webhook_allow_private_addresses": False}))
    body = {"url": "http://10.0.0.5/hook", "events": ["story.final"]}
    with TestClient(strict, base_url="http://testserver") as client:
        refused = client.post("/api/v1/webhooks", json=body, headers=admin)
        assert refused.status_code == 400
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert "public addresses" in refused.json()["detail"]
        public = client.post(
            "/api/v1/webhooks",
            json={**body, "url": "https://93.184.216.34/hook"},
            headers=admin,
        )
        assert public.status_code == 201, public.text
        moved = client.patch(
            f"/api/v1/webhooks/{public.json()['id']}",
            json={"url": "http://[::1]:8080/x"},
            headers=admin,
        )
        assert moved.status_code == 400
    strict.state.engine.dispose()


def test_a_delivery_to_a_private_address_is_refused_and_logged(
    app: FastAPI,
    client: TestClient,
    admin: dict[str, str],
    receiver: Receiver,
    dispatcher: Callable[..., WebhookDispatcher],
    db: Callable[[], Any],
    make_survey: Callable[..., Any],
) -> None:
    """A subscription made while private addresses were allowed (or a name whose DNS answer
    changed) is refused when it is sent: nothing reaches the receiver, the attempt says why."""
    made = client.post(
        "/api/v1/webhooks",
        json={"url": receiver.url(), "events": ["story.received"]},
        headers=admin,
    )
    assert made.status_code == 201, made.text
    survey = make_survey()
    sent = client.post(
        f"/api/v1/public/surveys/{survey.slug}/incidents",
        json={"what_happened": "The gate agent rebooked me.", "valence": "satisfying"},
    )
    assert sent.status_code == 201, sent.text
    dispatcher(webhook_allow_private_addresses=False).drain()
    assert receiver.requests == []
    with db() as session:
        errors = list(session.scalars(select(WebhookAttempt.error)))
    assert errors and all(e and e.startswith("refused: 127.0.0.1") for e in errors)
