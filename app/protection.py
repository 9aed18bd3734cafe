"""Abuse protection for the public form: rate limit, CSRF tokens, request size limit."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from ipaddress import ip_address
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import PROBLEM_JSON

MAX_TRACKED_CLIENTS = 100_000


class RateLimiter:
    """Sliding-window limit per client key, kept in this process.

    Several API processes each keep their own window; the limit then applies per process,
    which still bounds a single client's flood (documented in the README)."""

    def __init__(
        self, limit: int, window_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window_seconds
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}
        self._pruned_at = clock()
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        now = self._clock()
        with self._lock:
            hits = self._hits.setdefault(key, deque())
            while hits and hits[0] <= now - self.window:
                hits.popleft()
            if len(hits) >= self.limit:
                return False
            hits.append(now)
            # Forget idle clients so memory stays bounded: at most once a window, so that a
            # flood from many addresses does not make every request rebuild the table.
            if len(self._hits) > MAX_TRACKED_CLIENTS and now - self._pruned_at >= self.window:
                self._pruned_at = now
                self._hits = {
                    k: v for k, v in self._hits.items() if v and v[-1] > now - self.window
                }
            return True


CSRF_COOKIE = "cit_csrf"


def new_csrf_cookie() -> str:
    return secrets.token_urlsafe(32)


def csrf_token_for(secret_key: str, cookie_value: str) -> str:
    """The form's hidden token: an HMAC of the cookie, so a cross-site page can forge neither."""
    return hmac.new(
        secret_key.encode(), f"csrf:{cookie_value}".encode(), hashlib.sha256
    ).hexdigest()


def csrf_valid(secret_key: str, cookie_value: str | None, form_token: str | None) -> bool:
    if not cookie_value or not form_token:
        return False
    return hmac.compare_digest(csrf_token_for(secret_key, cookie_value), form_token)


class BodySizeLimitMiddleware:
    """Refuses request bodies over `max_bytes` (413) however they are sent.

    With a Content-Length over the limit, at once. A body sent without one (chunked) is read
    here, up to the limit, before the app sees it: refused past the limit with the same 413
    (an error raised from inside the app's body reading would come out as a 400), else handed
    on whole."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        uploads: tuple[re.Pattern[str], int] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.uploads = uploads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.uploads is not None and self.uploads[0].match(scope.get("path", "")):
            # File uploads get their own, larger limit (CIT_MAX_UPLOAD_BYTES).
            await BodySizeLimitMiddleware(self.app, self.uploads[1])(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            if length.isdigit() and int(length) > self.max_bytes:
                await self._reject(send)
                return
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_bytes:
                await self._reject(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, send: Send) -> None:
        body = (
            b'{"type":"/problems/payload-too-large","title":"Payload too large",'
            b'"status":413,"detail":"request body over '
            + str(self.max_bytes).encode()
            + b' bytes"}'
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", PROBLEM_JSON.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def client_key(request: Any) -> str:
    """The client's address, for rate limits: the peer, or, when the peer is a trusted reverse
    proxy (CIT_TRUSTED_PROXIES), the last address in X-Forwarded-For that is not one of ours.
    An X-Forwarded-For from anyone else is ignored, so it cannot dodge a limit."""
    client = getattr(request, "client", None)
    peer = client.host if client else "unknown"
    networks = request.app.state.settings.trusted_proxy_networks
    if not networks or not _trusted(peer, networks):
        return str(peer)
    hops = [h.strip() for h in request.headers.get("x-forwarded-for", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, networks):
            return hop
    return hops[0] if hops else str(peer)


def _trusted(address: str, networks: tuple[Any, ...]) -> bool:
    try:
        ip = ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)
