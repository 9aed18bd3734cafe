"""Chromium through Playwright against a real uvicorn server on loopback.

Outside CI a machine without Chromium skips these tests; with CI=true a missing browser fails."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI

from app.config import Settings
from app.main import create_app

CHROMIUM = os.environ.get("CIT_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("CIT_TEST_ARTIFACTS", "var/test-artifacts"))
# axe-core from npm (`npm ci --prefix tests/browser`, done by .ci/run); injected as an init
# script, which the pages' Content-Security-Policy does not apply to.
AXE = Path(__file__).parent / "node_modules" / "axe-core" / "axe.min.js"
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI needs it; .ci/run installs it)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        _missing(f"Chromium not found at {CHROMIUM}")
    return CHROMIUM


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def live_server(settings: Settings, app: FastAPI) -> Iterator[str]:
    """Serve a second app on the same test database; `app` stays the fixture that cleans up."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    served = create_app(settings.model_copy(update={"public_base_url": base}))
    server = uvicorn.Server(
        uvicorn.Config(served, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the test server did not start")
        time.sleep(0.05)
    yield base
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def chromium(chromium_path: str):  # type: ignore[no-untyped-def]
    """Factory: a new browser context (its own cookies: one person), phone-sized by default."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        contexts = []

        def new_context(width: int = 390, height: int = 844):  # type: ignore[no-untyped-def]
            context = browser.new_context(viewport={"width": width, "height": height})
            if AXE.exists():
                context.add_init_script(path=str(AXE))
            contexts.append(context)
            return context

        yield new_context
        for context in contexts:
            context.close()
        browser.close()


@pytest.fixture
def page(chromium):  # type: ignore[no-untyped-def]
    yield chromium().new_page()


@pytest.fixture
def axe() -> Callable[[Any, str], None]:
    """`axe(page, what)`: axe-core's WCAG 2.x A/AA and best-practice rules on the page as it
    is now; any violation fails the test with the rule, the elements and axe's advice."""
    if not AXE.exists():
        _missing(f"axe-core not found at {AXE} (npm ci --prefix tests/browser)")

    def check(page: Any, what: str) -> None:
        page.wait_for_function("() => typeof window.axe !== 'undefined'")
        result = page.evaluate(
            "async (tags) => await axe.run(document, {runOnly: {type: 'tag', values: tags}})",
            AXE_TAGS,
        )
        problems = [
            f"{v['id']} ({v['impact']}): {v['help']} -> "
            + "; ".join(" ".join(n["target"]) + ": " + n["failureSummary"] for n in v["nodes"][:3])
            for v in result["violations"]
        ]
        assert not problems, f"axe on {what} ({page.url}):\n" + "\n".join(problems)

    return check


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
