"""uvicorn's h11 protocol with a header read timeout: a connection whose request head has not
fully arrived within `PQSYNC_HEADER_TIMEOUT_SECONDS` (a client that connects and sends
nothing, or drips its headers a line at a time) is answered 408 and closed, so that slow
clients cannot hold the server's connections. uvicorn itself only times out idle keep-alive
connections after a response; the reverse proxy in front (README) is a second line."""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from pqsync.logging import get_logger

log = get_logger("pqsync.web")


def _timeout_answer() -> bytes:
    body = b"the request head did not arrive in time"
    return (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    )


class HeaderTimeoutProtocol(H11Protocol):
    """H11Protocol that gives each request head `header_timeout` seconds to arrive, counted
    from the connection's start or from the first byte of a keep-alive connection's next
    request."""

    # Set from the settings by `pqsync serve` (and in each worker process by the factory).
    header_timeout: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        waiting_for_head = self.conn.their_state is h11.IDLE
        if waiting_for_head:
            if self._head_timer is None:
                self._arm_head_timer()
            self._head_bytes += len(data)
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # A pipelined request's head may already be here; otherwise the keep-alive timeout
        # runs until the next request's first byte, which arms the head timer again.
        if self.conn.their_state is not h11.IDLE:
            self._disarm_head_timer()

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self._head_bytes = 0
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self._head_bytes:
            log.info("http.header_timeout", received=self._head_bytes)
            self.transport.write(_timeout_answer())
        self.transport.close()
