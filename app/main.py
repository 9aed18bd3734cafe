"""create_app(): routers, error handlers, middleware, templates and the database engine."""

from __future__ import annotations

import gc
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Response
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy import Engine, text
from starlette.concurrency import run_in_threadpool

from app import migrate
from app.accounts.pages import router as accounts_pages_router
from app.accounts.router import router as people_router
from app.accounts.service import SignInLimits
from app.alerts.pages import pages_router as alerts_pages_router
from app.alerts.router import router as alerts_router
from app.cases.pages import pages_router as cases_pages_router
from app.cases.router import router as cases_router
from app.codebooks.pages import router as codebooks_pages_router
from app.codebooks.router import proposals_router as code_proposals_router
from app.codebooks.router import router as codebooks_router
from app.config import Settings, get_settings
from app.db import DbGate, create_db_engine, make_sessionmaker
from app.docs import install_docs
from app.erasure.pages import router as erasure_pages_router
from app.erasure.router import public_router as erasure_public_router
from app.erasure.router import router as erasure_router
from app.errors import ServiceUnavailable, install_error_handlers, problem_responses
from app.exports.router import router as exports_router
from app.imports.router import router as imports_router
from app.incidents.intake import RulesCache
from app.incidents.router import public_router as incidents_public_router
from app.incidents.router import router as incidents_router
from app.jobs.router import router as jobs_router
from app.observability import RequestContextMiddleware, configure_logging, metrics_body
from app.openapi_problems import document_problems
from app.protection import BodySizeLimitMiddleware, RateLimiter
from app.refi.router import router as refi_router
from app.reports.cache import ReportCache
from app.reports.pages import pages_router as reports_pages_router
from app.reports.router import router as reports_router
from app.reviews.pages import router as reviews_pages_router
from app.reviews.router import audit_router as review_audit_router
from app.reviews.router import reports_router as agreement_router
from app.reviews.router import router as reviews_router
from app.security import SecurityHeadersMiddleware
from app.suggestions.router import router as nlp_router
from app.suggestions.worker import Worker
from app.surveys.admin_pages import router as surveys_admin_pages_router
from app.surveys.pages import router as pages_router
from app.surveys.router import public_router as surveys_public_router
from app.surveys.router import router as surveys_router
from app.tokens.pages import router as tokens_pages_router
from app.tokens.router import router as tokens_router
from app.webhooks.pages import router as webhooks_pages_router
from app.webhooks.router import router as webhooks_router

APP_DIR = Path(__file__).parent
# File uploads (imports, REFI-QDA files) may be larger than other request bodies.
UPLOAD_PATHS = re.compile(r"^/api/v1/(surveys/\d+/imports|codebooks/qdc|surveys/\d+/qdpx)$")

PROBLEM_SCHEMA = {
    "type": "object",
    "description": "RFC 9457 problem details",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["type", "title", "status", "detail"],
}


def _readiness(engine: Engine, head: str | None) -> str | None:
    """Why the service is not ready, or None."""
    try:
        with engine.connect() as conn:
            current = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except Exception as error:
        return f"the database is unreachable ({type(error).__name__})"
    if current != head:
        return f"the database schema is at {current}, the migrations' head is {head}"
    return None


def freeze_start_up_objects() -> None:
    """Everything made at start-up (modules, the app and its routes, models, schemas, the
    redaction patterns) lives as long as the process: frozen (gc.freeze), it is out of the
    cyclic collector's reach, and a full collection scans only what requests made since. With
    the API's ~230,000 start-up objects a full collection took ~130 ms, every request of the
    process waiting for it: the coding path's p99 at 8 coders (bench/README.md, Coding path).
    Garbage is collected first, so that no cycle is frozen with the rest."""
    gc.collect()
    gc.freeze()


def create_app(settings: Settings | None = None, *, start_worker: bool = False) -> FastAPI:
    """The ASGI app; `start_worker` runs one job worker in a thread for the app's lifetime."""
    settings = settings or get_settings()
    engine = create_db_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        pool_timeout=settings.db_queue_timeout_seconds,
        lock_timeout_seconds=settings.db_lock_timeout_seconds,
        statement_timeout_seconds=settings.db_statement_timeout_seconds,
    )
    sessions = make_sessionmaker(engine)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        limiter = anyio.to_thread.current_default_thread_limiter()
        limiter.total_tokens = max(limiter.total_tokens, settings.worker_threads)
        worker = Worker(sessions, settings) if start_worker else None
        thread = worker.start_thread() if worker else None
        if settings.gc_freeze:
            freeze_start_up_objects()
        try:
            yield
        finally:
            if worker and thread:
                worker.stop()
                thread.join(timeout=30)
            engine.dispose()

    app = FastAPI(
        title="CIT service",
        version="0.1.0",
        lifespan=lifespan,
        description="Collect, suggest, confirm and report critical incidents.",
        # Served below from local files (no CDN) by pages that pass the CSP.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = sessions
    app.state.db_gate = DbGate(settings.db_concurrency, settings.db_queue_timeout_seconds)
    # Surveys as last read by this process: the form re-renders from it while the database is
    # away, so a respondent's text is never lost to an outage.
    app.state.survey_cache = {}
    # Survey rules the intake checks stories against, re-read every RULES_TTL_SECONDS.
    app.state.rules_cache = RulesCache()
    app.state.templates = Jinja2Templates(directory=APP_DIR / "templates")
    # Finished reports by query and input state (app.reports.cache); off at 0 MB.
    app.state.report_cache = ReportCache(
        settings.report_cache_mb * 1_000_000, settings.report_cache_entries
    )
    app.state.submit_limiter = RateLimiter(
        settings.submit_rate_limit, settings.submit_rate_window_seconds
    )

    app.state.signin_limits = SignInLimits.from_settings(settings)

    install_error_handlers(app)
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.max_request_bytes,
        uploads=(UPLOAD_PATHS, settings.max_upload_bytes),
    )
    app.add_middleware(SecurityHeadersMiddleware)
    # Outermost: every answer, a 413 from the size limit included, carries a request id.
    app.add_middleware(RequestContextMiddleware, access_log_enabled=settings.log_access)
    app.mount("/static", StaticFiles(directory=APP_DIR / "static"), name="static")
    install_docs(app)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """Liveness: the process answers (it does not look at the database)."""
        return {"status": "ok"}

    head = migrate.head_revision(settings.database_url)

    @app.get(
        "/readyz",
        tags=["health"],
        responses=problem_responses(ServiceUnavailable),
    )
    async def readyz() -> dict[str, str]:
        """Readiness: 200 when the database answers and its schema is at the migrations' head;
        503 (with the reason) while it is unreachable or the migrations are behind."""
        problem_text = await run_in_threadpool(_readiness, engine, head)
        if problem_text:
            raise ServiceUnavailable(problem_text)
        return {"status": "ready"}

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        body, content_type = await run_in_threadpool(metrics_body, engine)
        return Response(body, media_type=content_type)

    # Routes are tried in order, and FastAPI tries each included router's routes in turn (about
    # 20-30 us a router here): the probes and the paths every respondent and coder hits come
    # first. No two routes match the same method and path (tests/test_routes.py), so the order
    # decides nothing but the time.
    for router in (
        incidents_public_router,
        pages_router,
        reviews_router,
        incidents_router,
        codebooks_router,
        code_proposals_router,
        jobs_router,
        nlp_router,
        surveys_router,
        surveys_public_router,
        agreement_router,
        review_audit_router,
        tokens_router,
        people_router,
        accounts_pages_router,
        tokens_pages_router,
        reviews_pages_router,
        codebooks_pages_router,
        surveys_admin_pages_router,
        reports_router,
        reports_pages_router,
        erasure_router,
        erasure_public_router,
        erasure_pages_router,
        exports_router,
        imports_router,
        refi_router,
        webhooks_router,
        webhooks_pages_router,
        cases_router,
        cases_pages_router,
        alerts_router,
        alerts_pages_router,
    ):
        app.include_router(router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = (
                PROBLEM_SCHEMA
            )
            document_problems(schema, app.routes)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def app_from_environment() -> FastAPI:
    """The app of one of several API processes (`cit serve --workers N`): settings from the
    environment, logs configured, no job worker inside (one runs beside them)."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings, start_worker=False)
