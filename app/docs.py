"""/docs (Swagger UI) and /redoc served offline: their scripts and styles come from the
fastapi-offline package (MIT; it ships swagger-ui-dist, Apache-2.0, and Redoc, MIT), and each
page starts them from an external script, so the Content-Security-Policy holds there too."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

VENDOR_PATH = "/static-vendor/docs"


def _vendor_dir() -> Path:
    return Path(str(files("fastapi_offline") / "static"))


def install_docs(app: FastAPI) -> None:
    app.mount(VENDOR_PATH, StaticFiles(directory=_vendor_dir()), name="docs-vendor")

    @app.get("/docs", include_in_schema=False, response_class=HTMLResponse)
    def swagger_ui(request: Request) -> HTMLResponse:
        return request.app.state.templates.TemplateResponse(  # type: ignore[no-any-return]
            request,
            "api_docs.html",
            {"lang": "en", "title": f"{app.title}: API documentation", "vendor": VENDOR_PATH},
        )

    @app.get("/redoc", include_in_schema=False, response_class=HTMLResponse)
    def redoc(request: Request) -> HTMLResponse:
        return request.app.state.templates.TemplateResponse(  # type: ignore[no-any-return]
            request,
            "api_redoc.html",
            {"lang": "en", "title": f"{app.title}: API reference", "vendor": VENDOR_PATH},
        )
