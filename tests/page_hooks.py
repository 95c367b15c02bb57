"""IntakeQ changing while we read: the real HTTP transport, with a hook after a page.

A test gives the client this transport (tests replace the client's transport, never its
insides); after the answer to page N of a listing without a `client` filter (a window
fetch), hook N runs once, as IntakeQ's other users act between our requests.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx


class PageHooks(httpx.BaseTransport):
    def __init__(self) -> None:
        self.real = httpx.HTTPTransport()
        self.after_page: dict[str, Callable[[], None]] = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.real.handle_request(request)
        response.read()
        page = request.url.params.get("page")
        is_window = "client" not in request.url.params
        hook = self.after_page.pop(page, None) if page and is_window else None
        if hook is not None:
            hook()
        return response

    def close(self) -> None:
        self.real.close()
