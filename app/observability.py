"""Operations: request ids, structured JSON logs, the access log, Prometheus metrics.

Every request gets an id (a valid `X-Request-ID` from the client or proxy, else a new one),
sent back in `X-Request-ID` and carried by every log line written while it is handled. Log lines
are JSON objects, one per line. The access log names a request by its route template
(`/i/{token}`, never the token) and says nothing of bodies or query strings: no story text and
no token reaches a log. Metrics use the official prometheus-client; with several API processes
(`cit serve --workers N` sets PROMETHEUS_MULTIPROC_DIR) `/metrics` adds them up across
processes."""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import REGISTRY, Collector
from sqlalchemy import Engine, func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.models import Job

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
access_log = logging.getLogger("cit.access")

HTTP_REQUESTS = Counter(
    "cit_http_requests",
    "HTTP requests answered, by route template, method and status",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "cit_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template and method",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DB_SESSIONS_IN_USE = Gauge(
    "cit_db_sessions_in_use",
    "Requests holding a database session (at most CIT_DB_CONCURRENCY per process)",
    multiprocess_mode="livesum",
)
DB_SESSIONS_WAITING = Gauge(
    "cit_db_sessions_waiting",
    "Requests waiting for a database session",
    multiprocess_mode="livesum",
)
DB_SESSION_REFUSALS = Counter(
    "cit_db_session_refusals",
    "Requests answered 503 because no database session was free in time",
)
INTAKE_BATCH = Histogram(
    "cit_intake_batch_stories",
    "Stories stored by one write transaction of the intake (SQLite's group commit: the "
    "submissions that arrived while the one before was being written)",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
# What only a job worker counts. `cit serve` runs its worker as a child process that writes
# these to CIT_WORKER_METRICS_DIR (prometheus-client's multiprocess files); the API process
# adds them to its own figures (a worker thread in the process, as in the tests, counts here).
WORKER_REGISTRY = CollectorRegistry()
JOB_FAILURES = Counter(
    "cit_job_failures",
    "Failed job attempts recorded by workers, by job kind",
    ["kind"],
    registry=WORKER_REGISTRY,
)
WORKER_METRICS_DIR = "CIT_WORKER_METRICS_DIR"


# --- Logs ------------------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, and extra fields
    passed as `extra={"fields": {...}}`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id:
            entry["request_id"] = request_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            # The exception's class and where it happened; tracebacks of database errors carry
            # no parameters (the engines hide them), so no story text is written here.
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    """Route every logger (ours, uvicorn's) to stderr in one format."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # uvicorn's own access log would print raw paths (/i/<token>): ours replaces it.
    logging.getLogger("uvicorn.access").disabled = True


# --- The request middleware ----------------------------------------------------------------


def route_label(scope: Scope) -> str:
    """The route template that answered (bounded label values; no ids or tokens)."""
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    if isinstance(path, str):
        return path
    return "static" if scope.get("path", "").startswith("/static/") else "unmatched"


class RequestContextMiddleware:
    """Request id in and out, the access log line, and the HTTP metrics."""

    def __init__(self, app: ASGIApp, *, access_log_enabled: bool = True) -> None:
        self.app = app
        self.access_log_enabled = access_log_enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _VALID_REQUEST_ID.match(incoming) else None
        request_id = request_id or uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = route_label(scope)
            method = scope.get("method", "")
            HTTP_REQUESTS.labels(route, method, str(status)).inc()
            HTTP_LATENCY.labels(route, method).observe(elapsed)
            if self.access_log_enabled:
                client = scope.get("client")
                access_log.info(
                    "request",
                    extra={
                        "fields": {
                            "method": method,
                            "route": route,
                            "status": status,
                            "duration_ms": round(elapsed * 1000, 2),
                            "client": client[0] if client else None,
                        }
                    },
                )
            REQUEST_ID.reset(token)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key == name:
            try:
                return value.decode("latin-1")
            except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
                return None
    return None


# --- /metrics ----------------------------------------------------------------------------------


class QueueCollector(Collector):
    """Job queue depth by kind and status, and the age of the oldest story waiting for its
    suggestions, read from the database at scrape time (so every process reports the same)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("cit_database_up", "1 when the database answered this scrape")
        jobs = GaugeMetricFamily(
            "cit_jobs", "Jobs in the queue by kind and status", labels=["kind", "status"]
        )
        lag = GaugeMetricFamily(
            "cit_suggestion_lag_seconds",
            "Age of the oldest story still waiting for its suggestions (0 when none waits)",
        )
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(Job.kind, Job.status, func.count()).group_by(Job.kind, Job.status)
                ).all()
                oldest = conn.execute(
                    select(func.min(Job.created_at)).where(
                        Job.kind == "suggest", Job.status.in_(("queued", "running"))
                    )
                ).scalar()
        except Exception:  # the database is away: say so, and report what this process knows
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        for kind, status, count in rows:
            jobs.add_metric([kind, status], count)
        if oldest is not None and oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=UTC)
        lag.add_metric([], (datetime.now(UTC) - oldest).total_seconds() if oldest else 0.0)
        yield up
        yield jobs
        yield lag


class _WorkerFiles(Collector):
    """The worker process's own metrics (WORKER_REGISTRY's names) from its multiprocess files;
    the files also hold the zeros of every other metric its imports created, which are this
    process's to report."""

    def __init__(self, path: str) -> None:
        self.files = MultiProcessCollector(None, path)
        self.names = {metric.name for metric in WORKER_REGISTRY.collect()}

    def collect(self) -> Iterator[Metric]:
        return (metric for metric in self.files.collect() if metric.name in self.names)


def metrics_body(engine: Engine) -> tuple[bytes, str]:
    """The text exposition: this process's metrics (or, with PROMETHEUS_MULTIPROC_DIR, every
    process's, added up) followed by the queue figures read from the database."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        processes = CollectorRegistry()
        MultiProcessCollector(processes)
        own = generate_latest(processes)
    elif worker_dir := os.environ.get(WORKER_METRICS_DIR):
        worker = CollectorRegistry()
        worker.register(_WorkerFiles(worker_dir))
        own = generate_latest(REGISTRY) + generate_latest(worker)
    else:
        own = generate_latest(REGISTRY) + generate_latest(WORKER_REGISTRY)
    queue = CollectorRegistry()
    queue.register(QueueCollector(engine))
    return own + generate_latest(queue), CONTENT_TYPE_LATEST
