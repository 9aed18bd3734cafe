"""Webhook delivery, run by the worker: fan events out, queue them in order, send, log, retry.

The steps, each in its own short transaction, none open during an HTTP call:

1. `fan_out`: outbox events not yet dispatched become one `pending` delivery per active
   subscription that wants them (an event nobody wants is deleted).
2. `promote`: a pending delivery gets a job (`webhook.deliver`, the database job queue) once no
   earlier delivery of the same story to the same subscription is still open; deliveries without
   a story (model.activated, alert.fired) are not held back. So a story's events reach a
   subscriber in event order: event n+1 leaves only after n was delivered or given up.
3. `claim` (the job queue's leases) and `prepare` the request; `send` it with httpx, with a
   timeout and no transaction open; `record` the attempt (the delivery log), then finish the job
   or leave it to the queue to run again after an exponential backoff with jitter. A worker
   killed mid-send leaves the job leased: it is sent again when the lease runs out (delivery
   is at least once; receivers deduplicate by `CIT-Event-Id`).

A subscription whose attempts failed `webhook_disable_after` times in a row is disabled with the
reason; its open deliveries wait (pending) until an admin enables it again."""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import orjson
from sqlalchemy import and_, delete, exists, insert, or_, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from app import encryption
from app.config import Settings
from app.db import session_scope
from app.errors import DATABASE_UNAVAILABLE
from app.incidents.redaction import readable, redacted_answers, required_redaction
from app.jobs import queue
from app.jobs.queue import ClaimedJob
from app.models import Incident, WebhookAttempt, WebhookDelivery, WebhookEvent, WebhookSubscription
from app.models.base import utcnow
from app.webhooks import addresses, service
from app.webhooks.events import TEXT_EVENTS

log = logging.getLogger("cit.webhooks")

DELIVER = "webhook.deliver"
SIGNATURE_HEADER = "CIT-Signature"
USER_AGENT = "cit-webhooks/1"
FAN_OUT_BATCH = 500
EXCERPT_CHARS = 200
MAX_ERROR_CHARS = 500
OPEN = ("pending", "queued")
PRUNE_EVERY_SECONDS = 600


# Signing ----------------------------------------------------------------------------------------


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of `<timestamp>.<body>` with the subscription's secret."""
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """`t=<unix seconds>,v1=<hex>`, as Stripe writes it."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={sign(secret, t, body)}"


def verify_signature(
    secret: str, header: str, body: bytes, *, tolerance_seconds: int = 300, now: float | None = None
) -> bool:
    """What a receiver does (the README shows the same in a few lines): parse the header, reject
    an old timestamp (a replay), compare the signature in constant time."""
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        parts.setdefault(key, []).append(value)
    try:
        timestamp = int(parts["t"][0])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_seconds:
        return False
    expected = sign(secret, timestamp, body)
    return any(hmac.compare_digest(expected, given) for given in parts.get("v1", []))


def backoff_seconds(attempt: int, settings: Settings, rng: random.Random | None = None) -> float:
    """Delay after failed attempt `attempt` (1-based): base * 2^(attempt-1), capped, then
    "equal jitter" (half fixed, half random) so that a receiver coming back is not hit by every
    retry at the same second."""
    ceiling = min(
        settings.webhook_backoff_max_seconds,
        settings.webhook_backoff_base_seconds * 2 ** max(attempt - 1, 0),
    )
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


# Fan-out and order ------------------------------------------------------------------------------


def fan_out(session: Session, limit: int = FAN_OUT_BATCH) -> int:
    """Turn undispatched outbox events into pending deliveries; returns how many events."""
    events = session.execute(
        select(WebhookEvent.id, WebhookEvent.event_type, WebhookEvent.story_id)
        .where(WebhookEvent.dispatched_at.is_(None))
        .order_by(WebhookEvent.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if not events:
        return 0
    subscriptions = session.execute(
        select(WebhookSubscription.id, WebhookSubscription.events).where(
            WebhookSubscription.active.is_(True)
        )
    ).all()
    now = utcnow()
    rows: list[dict[str, Any]] = []
    wanted: list[int] = []
    unwanted: list[int] = []
    for event in events:
        matching = [s.id for s in subscriptions if event.event_type in (s.events or [])]
        (wanted if matching else unwanted).append(event.id)
        rows += [
            {
                "subscription_id": subscription_id,
                "event_id": event.id,
                "story_id": event.story_id,
                "status": "pending",
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
            }
            for subscription_id in matching
        ]
    if rows:
        session.execute(insert(WebhookDelivery), rows)
    if wanted:
        session.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id.in_(wanted))
            .values(dispatched_at=now)
            .execution_options(synchronize_session=False)
        )
    if unwanted:
        session.execute(
            delete(WebhookEvent)
            .where(WebhookEvent.id.in_(unwanted))
            .execution_options(synchronize_session=False)
        )
    return len(events)


def promote(session: Session, settings: Settings, limit: int = FAN_OUT_BATCH) -> list[int]:
    """Queue a job for every pending delivery whose turn it is; returns their ids.

    Run every round: a delivery finished in one transaction while its successor was being
    fanned out in another is picked up by the next round, so no delivery waits for a wake-up
    that never comes."""
    earlier = aliased(WebhookDelivery)
    delivery = WebhookDelivery
    turn = or_(
        delivery.story_id.is_(None),
        ~exists().where(
            earlier.subscription_id == delivery.subscription_id,
            earlier.story_id == delivery.story_id,
            earlier.status.in_(OPEN),
            or_(
                earlier.event_id < delivery.event_id,
                and_(earlier.event_id == delivery.event_id, earlier.id < delivery.id),
            ),
        ),
    )
    active = select(WebhookSubscription.id).where(WebhookSubscription.active.is_(True))
    ids = list(
        session.scalars(
            select(delivery.id)
            .where(delivery.status == "pending", delivery.subscription_id.in_(active), turn)
            .order_by(delivery.id)
            .limit(limit)
        )
    )
    if not ids:
        return []
    promoted = list(
        session.scalars(
            update(delivery)
            .where(delivery.id.in_(ids), delivery.status == "pending")
            .values(status="queued", updated_at=utcnow())
            .returning(delivery.id)
            .execution_options(synchronize_session=False)
        )
    )
    queue.enqueue_many(
        session,
        DELIVER,
        [({"delivery_id": i}, f"webhook_delivery:{i}") for i in promoted],
        dedupe=True,
        max_attempts=settings.webhook_max_attempts,
    )
    return promoted


def prune(session: Session, retention_days: int) -> int:
    """Delete events dispatched more than `retention_days` ago whose deliveries are all closed
    (delivered or given up); their deliveries and log go with them. Returns how many."""
    cutoff = utcnow() - timedelta(days=retention_days)
    still_open = exists().where(
        WebhookDelivery.event_id == WebhookEvent.id, WebhookDelivery.status.in_(OPEN)
    )
    result = session.execute(
        delete(WebhookEvent)
        .where(WebhookEvent.dispatched_at < cutoff, ~still_open)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


# One attempt ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    job: ClaimedJob
    delivery_id: int
    subscription_id: int
    event_id: int
    event_type: str
    url: str
    body: bytes
    # The signing key in clear; None when no configured key opens the stored one, and then
    # `unsigned` says why (the attempt fails with that reason and nothing is sent).
    secret: str | None = field(repr=False)
    unsigned: str | None = None


@dataclass(frozen=True)
class Outcome:
    outcome: str  # delivered, http_error, timeout, error
    response_code: int | None
    duration_ms: int
    error: str | None
    excerpt: str | None

    @property
    def delivered(self) -> bool:
        return self.outcome == "delivered"


def event_body(
    session: Session, event: WebhookEvent, subscription: WebhookSubscription, settings: Settings
) -> bytes:
    """The JSON body: the event's ids and payload; with `include_text`, and once the story is
    redacted as the configuration requires, its redacted text."""
    data = dict(event.payload)
    if subscription.include_text and event.event_type in TEXT_EVENTS and event.story_id:
        incident = session.get(Incident, event.story_id)
        if incident is not None and readable(incident, required_redaction(settings.nlp_pipeline)):
            data["redacted_text"] = redacted_answers(incident)
    body = {
        "id": f"evt_{event.id}",
        "type": event.event_type,
        "created_at": event.created_at.isoformat(),
        "survey_id": event.survey_id,
        "story_id": event.story_id,
        "data": data,
    }
    return orjson.dumps(body)


def prepare(session: Session, job: ClaimedJob, settings: Settings) -> Request | None:
    """The request for a claimed delivery job, or None when there is nothing to send (the
    delivery is gone or no longer queued, or its subscription was disabled: then the delivery
    waits, pending, and the job is done)."""
    delivery = session.get(WebhookDelivery, job.payload["delivery_id"])
    subscription = session.get(WebhookSubscription, delivery.subscription_id) if delivery else None
    if delivery is None or subscription is None or delivery.status != "queued":
        queue.finish(session, [job.id])
        return None
    if not subscription.active:
        delivery.status = "pending"
        queue.finish(session, [job.id])
        return None
    event = session.get(WebhookEvent, delivery.event_id)
    assert event is not None  # deliveries go with their event (ON DELETE CASCADE)
    secret: str | None = None
    unsigned: str | None = None
    try:
        secret = service.signing_secret(settings, subscription)
    except (encryption.CannotDecrypt, encryption.KeysInvalid) as error:
        unsigned = f"cannot sign: {error}"[:MAX_ERROR_CHARS]
        log.error("webhook subscription %s: %s", subscription.id, unsigned)
    return Request(
        job=job,
        delivery_id=delivery.id,
        subscription_id=subscription.id,
        event_id=event.id,
        event_type=event.event_type,
        url=subscription.url,
        body=event_body(session, event, subscription, settings),
        secret=secret,
        unsigned=unsigned,
    )


def send(
    client: httpx.Client, request: Request, timeout: float, *, allow_private: bool = False
) -> Outcome:
    """POST the signed body; reads at most a short excerpt of the response, and gives up on a
    response that trickles in for longer than `timeout` altogether. Unless `allow_private`,
    only to a checked public address of the URL's host (app.webhooks.addresses)."""
    started = time.perf_counter()
    if request.secret is None:  # an unsigned request is never sent
        return Outcome("error", None, 0, request.unsigned or "cannot sign", None)
    target = addresses.Target(request.url)
    if not allow_private:
        try:
            target = addresses.resolve(request.url)
        except addresses.Refused as error:
            return Outcome("error", None, _ms(started), f"refused: {error}", None)
    headers = {
        **target.headers,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "CIT-Event": request.event_type,
        "CIT-Event-Id": f"evt_{request.event_id}",
        "CIT-Delivery": str(request.delivery_id),
        SIGNATURE_HEADER: signature_header(request.secret, request.body),
    }
    try:
        with client.stream(
            "POST", target.url, content=request.body, headers=headers, extensions=target.extensions
        ) as reply:
            excerpt = b""
            for chunk in reply.iter_bytes():
                excerpt += chunk
                if len(excerpt) >= EXCERPT_CHARS:
                    break
                if time.perf_counter() - started > timeout:
                    raise httpx.ReadTimeout("the response took longer than the timeout")
            code = reply.status_code
    except httpx.TimeoutException as error:
        return Outcome("timeout", None, _ms(started), _error(error), None)
    except httpx.HTTPError as error:
        return Outcome("error", None, _ms(started), _error(error), None)
    if 200 <= code < 300:
        return Outcome("delivered", code, _ms(started), None, None)
    text = excerpt[:EXCERPT_CHARS].decode("utf-8", "replace")
    return Outcome("http_error", code, _ms(started), f"HTTP {code}", text or None)


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


def _error(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS]


def record(
    session: Session, request: Request, outcome: Outcome, settings: Settings, worker: str
) -> str:
    """Log the attempt and move the delivery on; returns its status."""
    job = request.job
    now = utcnow()
    session.execute(
        insert(WebhookAttempt).values(
            delivery_id=request.delivery_id,
            attempt=job.attempts,
            at=now,
            outcome=outcome.outcome,
            response_code=outcome.response_code,
            duration_ms=outcome.duration_ms,
            error=outcome.error,
            response_excerpt=outcome.excerpt,
        )
    )
    delivery = session.get(WebhookDelivery, request.delivery_id, with_for_update=True)
    if delivery is None:  # its subscription was deleted meanwhile
        queue.finish(session, [job.id])
        return "gone"
    delivery.attempts += 1
    delivery.last_response_code = outcome.response_code
    delivery.last_error = outcome.error
    delivery.updated_at = now
    subscription = WebhookSubscription
    if outcome.delivered:
        delivery.status = "delivered"
        delivery.delivered_at = now
        # Written only when there is something to reset: deliveries to one subscriber do not
        # all take the lock of its row.
        session.execute(
            update(subscription)
            .where(
                subscription.id == request.subscription_id,
                subscription.consecutive_failures > 0,
            )
            .values(consecutive_failures=0)
            .execution_options(synchronize_session=False)
        )
        queue.finish(session, [job.id], worker=worker)
        return "delivered"
    failures = session.scalar(
        update(subscription)
        .where(subscription.id == request.subscription_id)
        .values(consecutive_failures=subscription.consecutive_failures + 1)
        .returning(subscription.consecutive_failures)
        .execution_options(synchronize_session=False)
    )
    if failures is not None and failures >= settings.webhook_disable_after:
        disabled = session.execute(
            update(subscription)
            .where(subscription.id == request.subscription_id, subscription.active.is_(True))
            .values(
                active=False,
                disabled_at=now,
                disabled_reason=(
                    f"disabled after {failures} consecutive failed delivery attempts; "
                    f"the last: {outcome.error}"
                )[:1000],
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        if getattr(disabled, "rowcount", 0):
            log.warning(
                "webhook subscription %s disabled: %s", request.subscription_id, outcome.error
            )
    if job.attempts >= job.max_attempts:
        delivery.status = "failed"
        queue.finish(session, [job.id], worker=worker)
        return "failed"
    queue.fail(
        session,
        job,
        outcome.error or outcome.outcome,
        worker=worker,
        now=now,
        retry_in=backoff_seconds(job.attempts, settings),
    )
    return "queued"


# The loop ---------------------------------------------------------------------------------------


class WebhookDispatcher:
    """Delivers webhooks for one worker process, in a thread of its own so that a slow
    receiver never holds back the worker's other jobs; sends up to `webhook_concurrency` at
    once, each bounded by `webhook_timeout_seconds`."""

    def __init__(self, factory: sessionmaker[Session], settings: Settings, name: str) -> None:
        self.factory = factory
        self.settings = settings
        self.name = f"{name}:webhooks"
        timeout = settings.webhook_timeout_seconds
        self.client = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            follow_redirects=False,
            trust_env=False,  # no proxy from the environment: the URL is where it goes
            limits=httpx.Limits(max_connections=settings.webhook_concurrency * 2),
        )
        self._next_prune = 0.0
        self.pool = ThreadPoolExecutor(
            max_workers=settings.webhook_concurrency, thread_name_prefix="cit-webhook"
        )

    @property
    def lease_seconds(self) -> int:
        """Longer than one attempt can take (connect, send and read are each bounded by the
        timeout): a worker killed mid-send leaves the delivery to another after this long."""
        return math.ceil(self.settings.webhook_timeout_seconds * 2) + 5

    def run_once(self) -> int:
        """One round; returns how much happened (0: nothing to do)."""
        with session_scope(self.factory) as session:
            fanned = fan_out(session)
            promoted = promote(session, self.settings)
            if time.monotonic() >= self._next_prune:
                self._next_prune = time.monotonic() + PRUNE_EVERY_SECONDS
                prune(session, self.settings.webhook_retention_days)
        with session_scope(self.factory) as session:
            jobs = queue.claim(
                session,
                self.name,
                kinds=(DELIVER,),
                limit=self.settings.webhook_concurrency,
                lease_seconds=self.lease_seconds,
            )
            requests = [r for r in (prepare(session, j, self.settings) for j in jobs) if r]
        # The HTTP calls run with no transaction open; each records its own outcome.
        list(self.pool.map(self._deliver, requests))
        return fanned + len(promoted) + len(jobs)

    def _deliver(self, request: Request) -> str:
        outcome = send(
            self.client,
            request,
            self.settings.webhook_timeout_seconds,
            allow_private=self.settings.webhook_allow_private_addresses,
        )
        with session_scope(self.factory) as session:
            status = record(session, request, outcome, self.settings, self.name)
        log.info(
            "webhook delivery %s (%s) attempt %s: %s %s in %s ms",
            request.delivery_id,
            request.event_type,
            request.job.attempts,
            outcome.outcome,
            outcome.response_code or "",
            outcome.duration_ms,
        )
        return status

    def drain(self, max_rounds: int = 1000) -> int:
        """Run rounds until nothing is due (tests, `cit webhooks deliver`)."""
        total = 0
        for _ in range(max_rounds):
            done = self.run_once()
            if done == 0:
                break
            total += done
        return total

    def run_forever(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                done = self.run_once()
            except DATABASE_UNAVAILABLE as error:
                # The database is away for a moment: one line, and try again later.
                log.warning("database unavailable (%s); webhooks wait", type(error).__name__)
                done = 0
            except Exception:  # keep delivering; the traceback says where it failed
                log.exception("webhook round failed")
                done = 0
            if done == 0:
                stop.wait(self.settings.worker_poll_seconds)

    def start_thread(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(
            target=self.run_forever, args=(stop,), name="cit-webhooks", daemon=True
        )
        thread.start()
        return thread

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.client.close()
