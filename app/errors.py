"""Typed application errors and the handlers that render every API error as problem+json."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import iter_route_contexts
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("cit.errors")


class AppError(Exception):
    """An error with an HTTP status; `detail` is shown to the client."""

    status: ClassVar[int] = 400
    title: ClassVar[str] = "Bad request"
    type_slug: ClassVar[str] = "bad-request"

    def __init__(
        self,
        detail: str,
        *,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra or {}
        self.headers = headers


class Invalid(AppError):
    status = 400
    title = "Invalid request"
    type_slug = "invalid"


class Unauthorized(AppError):
    status = 401
    title = "Unauthorized"
    type_slug = "unauthorized"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(AppError):
    status = 403
    title = "Forbidden"
    type_slug = "forbidden"


class NotFound(AppError):
    status = 404
    title = "Not found"
    type_slug = "not-found"


class Conflict(AppError):
    status = 409
    title = "Conflict"
    type_slug = "conflict"


class Gone(AppError):
    status = 410
    title = "Gone"
    type_slug = "gone"


class PreconditionFailed(AppError):
    status = 412
    title = "Precondition failed"
    type_slug = "precondition-failed"


class TooManyRequests(AppError):
    status = 429
    title = "Too many requests"
    type_slug = "too-many-requests"


# What a client is told to wait before retrying when the service or its database is busy/away.
RETRY_AFTER_SECONDS = 5


class ServiceUnavailable(AppError):
    status = 503
    title = "Service unavailable"
    type_slug = "unavailable"

    def __init__(self, detail: str, *, retry_after: int = RETRY_AFTER_SECONDS) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


# Errors that say the database is away or saturated, not that the request is wrong: the pool
# could not hand out a connection, the server is unreachable or restarting, a lock or statement
# timed out. SQLAlchemy wraps them as OperationalError / InterfaceError (DBAPI) or raises its
# own pool TimeoutError.
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    PoolTimeoutError,
)


def database_unavailable(exc: BaseException) -> bool:
    return isinstance(exc, DATABASE_UNAVAILABLE)


def problem(
    status: int,
    title: str,
    detail: str,
    type_slug: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"/problems/{type_slug}",
        "title": title,
        "status": status,
        "detail": detail,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def problem_responses(*errors: type[AppError]) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route, so that OpenAPI lists the problems it can answer with."""
    return {
        err.status: {
            "description": err.title,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for err in errors
    }


def _as_page(request: Request, status: int, title: str, detail: str) -> Response | None:
    """Pages (and browsers navigating to an API URL) get HTML: a 401 sends them to sign in."""
    from app import pages  # pages import auth, which imports this module

    if not pages.is_page_request(request):
        return None
    if status == 401:
        return pages.sign_in_redirect(request)
    return pages.error_page(request, status, title, detail)


def _allowed_methods(app: FastAPI, path: str) -> list[str]:
    """The methods of the resource a path names: the first route template matching it, as the
    router picks, and every route declared on that same template."""
    table = getattr(app.state, "route_methods", None)
    if table is None:
        table = [
            (context.path_regex, context.path_format, frozenset(context.methods))
            for context in iter_route_contexts(app.router.routes)
            if context.methods and getattr(context, "path_regex", None) is not None
        ]
        app.state.route_methods = table
    # A literal template (/tokens/me) names the resource before a parameter one (/tokens/{prefix}).
    templates = [fmt for regex, fmt, _ in table if regex.match(path)]
    template = min(templates, key=lambda fmt: fmt.count("{"), default=None)
    methods: set[str] = set()
    for _, fmt, route_methods in table:
        if fmt == template:
            methods |= route_methods
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    async def app_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, AppError)
        page = _as_page(request, exc.status, exc.title, exc.detail)
        if page is not None:
            return page
        return problem(
            exc.status, exc.title, exc.detail, exc.type_slug, headers=exc.headers, **exc.extra
        )

    async def validation_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in errors)
        return problem(
            422, "Validation failed", f"Invalid input: {fields}", "validation", errors=errors
        )

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "Error")
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            # Starlette names only the methods of the first route matching the path; a path
            # served by several routes (GET and POST declared apart) allows all of theirs.
            headers["Allow"] = ", ".join(_allowed_methods(app, request.url.path))
        page = _as_page(request, exc.status_code, title, str(exc.detail))
        if page is not None:
            return page
        return problem(
            exc.status_code,
            title,
            str(exc.detail),
            title.lower().replace(" ", "-"),
            headers=headers or None,
        )

    async def out_of_range(_request: Request, exc: Exception) -> JSONResponse:
        # A number beyond the database's integer range (an id of 10**20), or text the database
        # refuses (NUL characters on PostgreSQL): the request is at fault, not the server.
        return problem(
            422,
            "Validation failed",
            "a value in the request is out of range or contains characters that cannot be stored",
            "validation",
        )

    async def unavailable(_request: Request, exc: Exception) -> JSONResponse:
        # Logged by class only: the message of a failed statement may quote story text.
        log.warning("database unavailable: %s", type(exc).__name__)
        return problem(
            503,
            ServiceUnavailable.title,
            "the database is unavailable for a moment; please retry",
            ServiceUnavailable.type_slug,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    async def unstorable_text(_request: Request, exc: Exception) -> JSONResponse:
        # A str the database driver cannot encode (a lone UTF-16 surrogate from a JSON escape):
        # refused, never stored altered, never a 500 with the text in a traceback.
        return problem(
            422,
            "Validation failed",
            "the request contains text that cannot be stored (an unpaired surrogate character)",
            "validation",
        )

    app.add_exception_handler(UnicodeEncodeError, unstorable_text)
    app.add_exception_handler(AppError, app_error)
    for error_class in DATABASE_UNAVAILABLE:
        app.add_exception_handler(error_class, unavailable)
    app.add_exception_handler(OverflowError, out_of_range)
    app.add_exception_handler(DataError, out_of_range)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
