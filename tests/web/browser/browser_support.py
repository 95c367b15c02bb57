"""What the browser tests share besides fixtures."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from playwright.sync_api import Page
from web_support import PASSWORD, USERS

from pqsync.bootstrap import App
from pqsync.jobs.worker import make_consumer
from pqsync.web.app import create_app

SCREENSHOTS_ENV = "PQSYNC_SCREENSHOTS"


def screenshot(page: Page, name: str, selector: str | None = None) -> None:
    """Saved only when PQSYNC_SCREENSHOTS names a folder (docs/screenshots.sh sets it), at
    laptop width: the README's pictures come from these tests, so they stay current."""
    folder = os.environ.get(SCREENSHOTS_ENV)
    if not folder or page.viewport_size is None or page.viewport_size["width"] < 1000:
        return
    path = Path(folder) / f"{name}.png"
    if selector is None:
        page.screenshot(path=path, full_page=True)
    else:
        page.locator(selector).screenshot(path=path)


def fits_width(page: Page) -> bool:
    """Nothing sticks out sideways (no horizontal scrolling, e.g. at 375 px)."""
    width: int = page.evaluate("document.documentElement.scrollWidth")
    return page.viewport_size is not None and width <= page.viewport_size["width"]


def sign_in(page: Page, who: str) -> Page:
    """Sign in through the form as one of the seeded users; lands on the roster."""
    page.goto("/login")
    page.get_by_label("Email").fill(USERS[who])
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/")
    return page


@contextmanager
def live_server(app: App) -> Iterator[str]:
    """The app served by uvicorn on a free loopback port, in a thread, with a worker
    consuming its queue (Sync all, webhooks) as `pqsync worker` would; yields its URL.
    The worker's minute tick (the nightly schedule) is left out: a test's clock is its own."""
    consumer = make_consumer(app, workers=2, periodic=False)
    consumer.start()
    config = uvicorn.Config(
        create_app(app), host="127.0.0.1", port=0, log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    while not server.started:  # startup takes a few milliseconds; nothing to wait on
        if not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        consumer.stop(graceful=True)
