"""IntakeQ changing while we read: the real HTTP transport, with a hook after a page.

A test gives the client this transport (tests replace the client's transport, never its
insides); after the answer to page N of a listing without a `client` filter (a window
fetch), when that page is full (another page follows), hook N runs once, as IntakeQ's other
users act between the pages we read. `after_client_page` does the same for a listing with a
`client` filter (one patient's own query). (A change after a listing's last page lands
after the run read IntakeQ: the run was right about what it read.)
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

PAGE_SIZE = 100  # IntakeQ's page


class PageHooks(httpx.BaseTransport):
    def __init__(self) -> None:
        self.real = httpx.HTTPTransport()
        self.after_page: dict[str, Callable[[], None]] = {}
        self.after_client_page: dict[str, Callable[[], None]] = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.real.handle_request(request)
        response.read()
        page = request.url.params.get("page")
        listing = request.url.path.rstrip("/").endswith("/appointments")
        full = listing and page is not None and len(response.json()) >= PAGE_SIZE
        hooks = self.after_page if "client" not in request.url.params else self.after_client_page
        hook = hooks.pop(page, None) if page and full else None
        if hook is not None:
            hook()
        return response

    def close(self) -> None:
        self.real.close()
