"""What every request and response goes through: a body size limit counted while the body
streams, and the security headers (one Content-Security-Policy, for the API and pages)."""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import MutableMapping
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pqsync.logging import get_logger
from pqsync.settings import Networks

log = get_logger("pqsync.web")

MAX_BODY_BYTES = 1_000_000

# Pages load scripts and styles only from our own origin (no inline script, no CDN);
# nothing may frame them, and forms post only back to us.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
HSTS = "max-age=31536000; includeSubDomains"


def security_headers(https: bool) -> dict[str, str]:
    """The headers every response carries; HSTS only when the request came over HTTPS."""
    headers = {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Opener-Policy": "same-origin",
    }
    if https:
        headers["Strict-Transport-Security"] = HSTS
    return headers


def _in(address: str | None, networks: Networks) -> bool:
    if not address or not networks:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def _header(scope: Scope, name: bytes) -> str | None:
    values = [v.decode("latin-1") for k, v in scope.get("headers", ()) if k == name]
    return ",".join(values) if values else None


def client_address(scope: Scope, trusted: Networks) -> str | None:
    """The caller's address: the peer's, or, when the peer is a trusted proxy, the last
    address in `X-Forwarded-For` that is not itself a trusted proxy."""
    peer = scope.get("client")
    address: str | None = peer[0] if peer else None
    if not _in(address, trusted):
        return address
    forwarded = _header(scope, b"x-forwarded-for")
    if not forwarded:
        return address
    for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return address  # a garbled chain is not believed
        if not _in(hop, trusted):
            return hop
        address = hop
    return address


def is_https(scope: Scope, trusted: Networks) -> bool:
    """Whether the caller reached us over HTTPS (`X-Forwarded-Proto` from a trusted proxy)."""
    if scope.get("scheme") in ("https", "wss"):
        return True
    peer = scope.get("client")
    if peer and _in(peer[0], trusted):
        proto = _header(scope, b"x-forwarded-proto") or ""
        return proto.split(",")[0].strip().lower() == "https"
    return False


def _error(status: int, code: str, message: str) -> tuple[dict[str, Any], bytes]:
    body = orjson.dumps({"error": {"code": code, "message": message}})
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ],
    }
    return start, body


_NUL_JSON = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000", re.IGNORECASE)


def _has_nul(scope: Scope, body: bytes) -> bool:
    """A NUL byte anywhere in the request: the path, the query, a form or JSON body. No
    field may hold one (PostgreSQL refuses it in text), so it is refused at the door (400)."""
    if b"\x00" in body or "\x00" in scope.get("path", ""):
        return True
    if b"%00" in scope.get("query_string", b""):
        return True
    kind = (_header(scope, b"content-type") or "").lower()
    if kind.startswith("application/x-www-form-urlencoded") and b"%00" in body:
        return True
    return kind.startswith("application/json") and _NUL_JSON.search(body) is not None


# All request headers together (names, values, separators): past this, 431.
MAX_HEADER_BYTES = 16 * 1024
# A body must keep arriving: this long without a part of it, 408 (PQSYNC_BODY_TIMEOUT_SECONDS).
BODY_TIMEOUT_SECONDS = 30.0


async def _answer(send: Send, status: int, code: str, message: str) -> None:
    start, body = _error(status, code, message)
    await send(start)
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Reads at most `limit` bytes of any request body before the app sees it, counting
    what arrives (a declared `Content-Length` is not trusted, a chunked body has none), and
    answers 413 past the limit. The body is handed on to the app afterwards, so memory per
    request stays below the limit."""

    def __init__(
        self,
        app: ASGIApp,
        limit: int = MAX_BODY_BYTES,
        *,
        body_timeout: float = BODY_TIMEOUT_SECONDS,
    ) -> None:
        self.app = app
        self.limit = limit
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if sum(len(k) + len(v) + 4 for k, v in scope.get("headers", ())) > MAX_HEADER_BYTES:
            await _answer(send, 431, "headers_too_large", "the headers are too large")
            return
        declared = _header(scope, b"content-length")
        if declared is not None and _header(scope, b"transfer-encoding") is not None:
            # Two framings of one body: a proxy and we could read it differently (smuggling).
            await _answer(
                send, 400, "ambiguous_length", "Content-Length and Transfer-Encoding together"
            )
            return
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._refuse(send)
            return
        chunks: list[bytes] = []
        received = 0
        while True:
            try:
                async with asyncio.timeout(self.body_timeout):
                    message = await receive()
            except TimeoutError:
                log.info("http.body_timeout", path=scope.get("path"), received=received)
                await _answer(send, 408, "body_timeout", "the body did not arrive in time")
                return
            if message["type"] == "http.disconnect":
                # An aborted upload: the client went away. An answer nobody reads, so the
                # request is one quiet `http.request` line (status 400), not an error.
                await _answer(send, 400, "client_aborted", "the client went away mid-body")
                return
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.limit:
                await self._refuse(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if _has_nul(scope, body):
            start, answer = _error(400, "nul_byte", "the request contains a NUL byte")
            await send(start)
            await send({"type": "http.response.body", "body": answer})
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        start, body = _error(
            413, "payload_too_large", f"the body may be at most {self.limit} bytes"
        )
        await send(start)
        await send({"type": "http.response.body", "body": body})


class SecurityHeaders:
    """Adds `security_headers()` to every response the app sends (unless a route set its
    own value of one of them)."""

    def __init__(self, app: ASGIApp, trusted_proxies: Networks = ()) -> None:
        self.app = app
        self.trusted = trusted_proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = security_headers(is_https(scope, self.trusted))

        async def send_with_headers(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.decode("latin-1").lower() for k, _ in headers}
                for name, value in extra.items():
                    if name.lower() not in present:
                        headers.append((name.lower().encode(), value.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
