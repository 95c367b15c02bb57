"""IntakeQ changing while we read: the real HTTP transport, with a hook after a page.

A test gives the client this transport (tests replace the client's transport, never its
insides); after the answer to page N of a listing without a `client` filter (a window
fetch), when that page is full (another page follows), hook N runs once, as IntakeQ's other
users act between the pages we read. (A change after a listing's last page lands after the
run read IntakeQ: the run was right about what it read.)
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

PAGE_SIZE = 100  # IntakeQ's page


class PageHooks(httpx.BaseTransport):
    def __init__(self) -> None:
        self.real = httpx.HTTPTransport()
        self.after_page: dict[str, Callable[[], None]] = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.real.handle_request(request)
        response.read()
        page = request.url.params.get("page")
        is_window = "client" not in request.url.params
        full = page is not None and len(response.json()) >= PAGE_SIZE
        hook = self.after_page.pop(page, None) if page and is_window and full else None
        if hook is not None:
            hook()
        return response

    def close(self) -> None:
        self.real.close()
