"""A real HTTP receiver on loopback (ports 8810-8819) that checks signatures, and the pieces
to publish events and run the worker's webhook rounds against the test database."""

from __future__ import annotations

import contextlib
import errno
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi import FastAPI

from app.config import Settings
from app.webhooks.delivery import WebhookDispatcher, verify_signature
from tests.reviews.conftest import (  # noqa: F401 - fixtures
    admin_person,
    codebook_id,
    make_story,
    person,
    review,
    survey,
)

PORTS = range(8810, 8817)  # 8817-8819: left to the benchmarks
ALL_EVENTS = [
    "story.received",
    "story.redacted",
    "suggestions.ready",
    "coding.saved",
    "story.final",
    "story.erased",
    "alert.fired",
    "model.activated",
]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered

    @property
    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.body))

    @property
    def type(self) -> str:
        return str(self.json["type"])


@dataclass
class Receiver:
    """Records every request; `answer(received_so_far, request) -> status` decides the reply
    (200 by default). `secrets` by path: a request whose signature does not verify is
    recorded with `signature_ok` False."""

    server: ThreadingHTTPServer
    requests: list[Received] = field(default_factory=list)
    bad_signatures: list[Received] = field(default_factory=list)
    secrets: dict[str, str] = field(default_factory=dict)
    answer: Callable[[list[Received], Received], int] = lambda seen, request: 200
    # Seconds to wait before answering the n-th request (0-based), outside the lock.
    pause: Callable[[int], float] = lambda n: 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def delivered(self, path: str | None = None) -> list[Received]:
        """Requests answered 2xx (what the subscriber accepted), in arrival order."""
        with self.lock:
            return [
                r
                for r in self.requests
                if 200 <= r.status < 300 and (path is None or r.path == path)
            ]


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            request = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, 0)
            with receiver.lock:
                secret = receiver.secrets.get(self.path)
                if secret is not None and not verify_signature(
                    secret, request.headers.get("cit-signature", ""), body
                ):
                    receiver.bad_signatures.append(request)
                request.status = receiver.answer(list(receiver.requests), request)
                receiver.requests.append(request)
                wait = receiver.pause(len(receiver.requests) - 1)
            time.sleep(wait)
            reply = b'{"ok": true}' if request.status < 300 else b"x" * 5000  # a long error page
            self.send_response(request.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            # The service reads a short excerpt of an error page and hangs up.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def start_receiver() -> Receiver:
    receiver = Receiver(server=None)  # type: ignore[arg-type]
    for port in PORTS:
        try:
            receiver.server = ThreadingHTTPServer(("127.0.0.1", port), _handler(receiver))
            break
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise
    else:
        pytest.fail("no free port in 8810-8816 for the webhook receiver")
    receiver.server.daemon_threads = True
    threading.Thread(target=receiver.server.serve_forever, daemon=True).start()
    return receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = start_receiver()
    yield found
    found.server.shutdown()
    found.server.server_close()


@pytest.fixture
def hook_settings(settings: Settings) -> Settings:
    """Retries without waiting (backoff 0), short timeouts."""
    return settings.model_copy(
        update={
            "webhook_backoff_base_seconds": 0.0,
            "webhook_timeout_seconds": 3.0,
            "webhook_max_attempts": 4,
            "webhook_disable_after": 50,
        }
    )


@pytest.fixture
def dispatcher(app: FastAPI, hook_settings: Settings) -> Iterator[Callable[..., WebhookDispatcher]]:
    """Factory: the worker's webhook rounds, with these settings changed."""
    made: list[WebhookDispatcher] = []

    def make(**changes: Any) -> WebhookDispatcher:
        found = WebhookDispatcher(
            app.state.sessionmaker, hook_settings.model_copy(update=changes), "test"
        )
        made.append(found)
        return found

    yield make
    for found in made:
        found.close()
