"""The OpenAPI document tells the truth about errors.

FastAPI documents only what a route lists in `responses=` and a 422 as `application/json`;
the service answers every error as `application/problem+json`, and some statuses come from
layers a route does not see: 401/403 from the authentication dependency, 413 from the body size
limit, 400 for a body that cannot be parsed or a cursor the API did not hand out, 503 when the
database (or the wait for a session) gives out, 422 from the validation handler. This adds them
to each operation from what the route depends on, so clients and schemathesis (`--checks all`)
can rely on the document."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.routing import BaseRoute

from app.auth import credentials
from app.errors import PROBLEM_JSON

PROBLEM_CONTENT = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
# Routes that answer without the database.
NO_DATABASE = frozenset({"/healthz"})


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    if dependant.call is not None:
        yield dependant.call
    for sub in dependant.dependencies:
        yield from _calls(sub)


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": PROBLEM_CONTENT}


def document_problems(schema: dict[str, Any], routes: Iterable[BaseRoute]) -> None:
    paths = schema.get("paths", {})
    # Routers are included lazily (as contexts): walk them as get_openapi does.
    for context in iter_route_contexts(list(routes)):
        if not isinstance(context.original_route, APIRoute):
            continue
        route: Any = context
        if not route.include_in_schema:
            continue
        operations = paths.get(route.path_format, {})
        calls = set(_calls(route.dependant))
        takes_input = bool(
            route.body_field
            or route.dependant.path_params
            or route.dependant.query_params
            or route.dependant.header_params
        )
        for method in route.methods or ():
            operation = operations.get(method.lower())
            if operation is None:
                continue
            responses: dict[str, Any] = operation.setdefault("responses", {})
            added: dict[str, dict[str, Any]] = {}
            if credentials in calls:  # current_user and the one-hop routes depend on it
                added["401"] = _problem("Missing, invalid or revoked credentials")
                added["403"] = _problem("The caller's role may not do this")
            if route.body_field is not None:
                added["400"] = _problem("The body could not be parsed (malformed form or upload)")
                added["413"] = _problem("Request body too large")
            if any(param.alias == "cursor" for param in route.dependant.query_params):
                added["400"] = _problem("The cursor is not one this API handed out")
            if takes_input:
                added["422"] = _problem("Validation failed (one entry per field in `errors`)")
            if route.path_format not in NO_DATABASE:
                added["503"] = _problem(
                    "The database is unavailable or saturated for a moment (see Retry-After)"
                )
            for status, response in added.items():
                responses.setdefault(status, response)
            for status, response in responses.items():
                # Every error is a problem document, whatever FastAPI put there by default.
                if status[:1] in ("4", "5") and status != "304":
                    response["content"] = PROBLEM_CONTENT
