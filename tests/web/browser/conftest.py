"""Browser tests: Debian's Chromium, driven by Playwright, against a real uvicorn server on
loopback that serves the app over the seeded database and the IntakeQ simulator.

Outside CI a machine without /usr/bin/chromium skips these tests and says why; in CI
(CI=true) a missing Chromium fails them (.ci/run installs it).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from browser_support import live_server
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from pqsync.bootstrap import App

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PHONE = {"width": 375, "height": 740}
LAPTOP = {"width": 1280, "height": 800}


@pytest.fixture(scope="session")
def playwright_driver() -> Iterator[Playwright]:
    if not CHROMIUM.exists():
        reason = f"Chromium is missing at {CHROMIUM}: apt-get install chromium"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright_driver: Playwright) -> Iterator[Browser]:
    chromium = playwright_driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield chromium
    chromium.close()


@pytest.fixture
def server(pq_app: App) -> Iterator[str]:
    with live_server(pq_app) as url:
        yield url


@pytest.fixture(params=["laptop", "phone"])
def viewport(request: pytest.FixtureRequest) -> dict[str, int]:
    return LAPTOP if request.param == "laptop" else PHONE


@pytest.fixture
def new_page(
    browser: Browser, server: str, viewport: dict[str, int]
) -> Iterator[Callable[[], Page]]:
    """Opens pages in fresh browser contexts (one per person) at the test's width."""
    contexts: list[BrowserContext] = []

    def open_page() -> Page:
        context = browser.new_context(base_url=server, viewport=viewport)  # type: ignore[arg-type]
        context.set_default_timeout(15_000)
        contexts.append(context)
        return context.new_page()

    yield open_page
    for context in contexts:
        context.close()
