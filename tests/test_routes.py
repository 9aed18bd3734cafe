"""The app's routes: no two of them answer the same method and path, so the order in which
`create_app` includes the routers (the hot paths first, for speed) decides nothing else; and the
paths every respondent, coder and probe hits are tried among the first routes."""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from starlette.routing import BaseRoute, Match, Route


def _leaves(routes: list[BaseRoute]) -> list[Route]:
    """Every endpoint route, the included routers' opened (FastAPI keeps an included router as
    one route holding the original router)."""
    found: list[Route] = []
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            found.extend(_leaves(inner.routes))
        elif isinstance(route, Route):
            found.append(route)
    return found


def _literals(routes: list[Route]) -> set[str]:
    return {s for r in routes for s in r.path.split("/") if s and "{" not in s}


def _sample(path: str, number: str, word: str) -> str:
    """`path` with its parameters filled: int ones with `number`, the others with `word`."""

    def fill(match: re.Match[str]) -> str:
        convertor = match.group(1).partition(":")[2]
        return number if convertor == "int" else "a/b" if convertor == "path" else word

    return re.sub(r"\{([^}]+)\}", fill, path)


def test_no_two_routes_answer_the_same_method_and_path(app: FastAPI) -> None:
    routes = _leaves(app.router.routes)
    assert len(routes) > 100  # the walk reached into the included routers
    # Each parameter filled with digits, a word, and every literal segment of any route (the
    # case that makes `/incidents/{id}` and `/incidents/search` collide).
    words = {"x7", "7", *_literals(routes)}
    clashes = set()
    for route in routes:
        for word in words if "{" in route.path else {""}:
            path = _sample(route.path, "7", word)
            for method in route.methods or set():
                others = [
                    other.path
                    for other in routes
                    if other is not route
                    and method in (other.methods or set())
                    and other.path_regex.match(path)
                ]
                if others:
                    clashes.add((method, route.path, path, tuple(others)))
    assert not clashes, sorted(clashes)


def _first_full_match(app: FastAPI, method: str, path: str) -> int:
    scope: dict[str, Any] = {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": "",
        "headers": [],
        "query_string": b"",
        "app": app,
    }
    for index, route in enumerate(app.router.routes):
        match, _child = route.matches(dict(scope))
        if match == Match.FULL:
            return index
    raise AssertionError(f"no route answers {method} {path}")


def test_the_hot_paths_are_tried_first(app: FastAPI) -> None:
    late = len(app.router.routes) // 3
    for method, path in [
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("POST", "/api/v1/public/surveys/demo/incidents"),
        ("GET", "/s/demo"),
        ("POST", "/s/demo"),
        ("POST", "/api/v1/review/next"),
        ("PUT", "/api/v1/incidents/7/codings/me"),
    ]:
        assert _first_full_match(app, method, path) < late, (method, path)
    # and the test can tell: a page of the admin workbench comes later
    assert _first_full_match(app, "GET", "/work/alerts") >= late
