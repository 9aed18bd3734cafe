"""create_app(): routers, error handlers, middleware, templates and the database engine."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from app.codebooks.router import router as codebooks_router
from app.config import Settings, get_settings
from app.db import create_db_engine, make_sessionmaker
from app.erasure.pages import router as erasure_pages_router
from app.erasure.router import public_router as erasure_public_router
from app.erasure.router import router as erasure_router
from app.errors import install_error_handlers
from app.exports.router import router as exports_router
from app.imports.router import router as imports_router
from app.incidents.router import public_router as incidents_public_router
from app.incidents.router import router as incidents_router
from app.jobs.router import router as jobs_router
from app.protection import BodySizeLimitMiddleware, RateLimiter
from app.refi.router import router as refi_router
from app.reports.pages import pages_router as reports_pages_router
from app.reports.router import router as reports_router
from app.reviews.router import audit_router as review_audit_router
from app.reviews.router import reports_router as agreement_router
from app.reviews.router import router as reviews_router
from app.suggestions.router import router as nlp_router
from app.suggestions.worker import Worker
from app.surveys.pages import router as pages_router
from app.surveys.router import public_router as surveys_public_router
from app.surveys.router import router as surveys_router
from app.tokens.router import router as tokens_router

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


def create_app(settings: Settings | None = None, *, start_worker: bool = False) -> FastAPI:
    """The ASGI app; `start_worker` runs one job worker in a thread for the app's lifetime."""
    settings = settings or get_settings()
    engine = create_db_engine(settings.database_url)
    sessions = make_sessionmaker(engine)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        worker = Worker(sessions, settings) if start_worker else None
        thread = worker.start_thread() if worker else None
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
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = sessions
    app.state.templates = Jinja2Templates(directory=APP_DIR / "templates")
    app.state.submit_limiter = RateLimiter(
        settings.submit_rate_limit, settings.submit_rate_window_seconds
    )

    install_error_handlers(app)
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.max_request_bytes,
        uploads=(UPLOAD_PATHS, settings.max_upload_bytes),
    )
    app.mount("/static", StaticFiles(directory=APP_DIR / "static"), name="static")
    for router in (
        codebooks_router,
        jobs_router,
        nlp_router,
        surveys_router,
        surveys_public_router,
        incidents_router,
        incidents_public_router,
        reviews_router,
        agreement_router,
        review_audit_router,
        tokens_router,
        reports_router,
        reports_pages_router,
        pages_router,
        erasure_router,
        erasure_public_router,
        erasure_pages_router,
        exports_router,
        imports_router,
        refi_router,
    ):
        app.include_router(router)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = (
                PROBLEM_SCHEMA
            )
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
