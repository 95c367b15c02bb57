"""The FastAPI app factory: `create_app(App)`, no module-level state."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import partial

import structlog
from fastapi import FastAPI, Request, Response
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from pqsync.bootstrap import App
from pqsync.logging import get_logger
from pqsync.services.auth import Authenticator
from pqsync.web.context import WebContext
from pqsync.web.docs import install_docs
from pqsync.web.errors import install_error_handlers, responses
from pqsync.web.render import STATIC_DIR
from pqsync.web.routes import (
    admin,
    auth,
    casework,
    dashboard,
    integrations,
    ops,
    org_admin,
    pages,
    push,
    staff_pages,
    sync,
)
from pqsync.web.security import BodyLimit, SecurityHeaders

log = get_logger("pqsync.web.requests")


REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


def request_id_of(given: str | None) -> str:
    """The caller's X-Request-ID when it is a plain token (a proxy's), else a new one."""
    return given if given and _REQUEST_ID.match(given) else uuid.uuid4().hex


def create_app(app: App) -> FastAPI:
    """The HTTP API over one composition root (settings, engine, clock, IntakeQ client)."""
    ctx = WebContext(
        app=app,
        auth=Authenticator(
            app.settings.secret_key.get_secret_value(),
            app.clock,
            idle_timeout=timedelta(minutes=app.settings.session_idle_minutes),
            lifetime=timedelta(hours=app.settings.session_lifetime_hours),
            token_lifetime=timedelta(days=app.settings.api_token_days),
        ),
    )

    api = FastAPI(
        title="pqsync",
        version="0.1.0",
        summary="IntakeQ appointments for the clinic's partner organisations.",
        description=(
            "Authenticate with the session cookie of `POST /api/auth/login` (then send its "
            "`csrfToken` as `X-CSRF-Token` on POST) or with `Authorization: Bearer <token>` "
            'from `pqsync users token`. Errors are `{"error": {"code", "message"}}`. '
            "Times are in the organisation's zone with their offset."
        ),
        docs_url=None,
        redoc_url=None,
        # Any request can be refused at the door (BodyLimit): a NUL byte, two body framings,
        # oversized headers or a body, one that stops arriving.
        responses=responses(400, 408, 413, 431),
    )
    api.state.pqsync = ctx
    ctx.metrics.watch(partial(ops.operational_metrics, app))
    install_error_handlers(api)
    for module in (
        auth,
        sync,
        dashboard,
        integrations,
        push,
        ops,
        admin,
        pages,
        staff_pages,
        casework,
        org_admin,
    ):
        api.include_router(module.router)
    api.include_router(casework.feed_router)
    install_docs(api)
    api.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @api.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(
            STATIC_DIR / "favicon.ico",
            media_type="image/x-icon",
            headers={"Cache-Control": "public, max-age=86400"},
        )

    # FastAPI's own pages (/docs, /openapi.json) do not name their route in the scope.
    static_paths = {
        path for route in api.routes if "{" not in (path := getattr(route, "path", "{"))
    }

    # Starlette runs the middleware added last first: headers, then the log, then the limit.
    api.add_middleware(BodyLimit, body_timeout=app.settings.body_timeout_seconds)

    @api.middleware("http")
    async def observe(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        request_id = request_id_of(request.headers.get(REQUEST_ID_HEADER))
        # Every log line of the request (and its access records) carries the id.
        with structlog.contextvars.bound_contextvars(request_id=request_id):
            response = await call_next(request)
            return _observed(request, response, started, request_id)

    def _observed(
        request: Request, response: Response, started: float, request_id: str
    ) -> Response:
        response.headers[REQUEST_ID_HEADER] = request_id
        # The route's template, never the raw path: paths hold ids, query strings hold tokens.
        route = getattr(request.scope.get("route"), "path", None) or (
            request.url.path if request.url.path in static_paths else "unmatched"
        )
        elapsed = time.perf_counter() - started
        ctx.metrics.requests.labels(request.method, route, str(response.status_code)).inc()
        ctx.metrics.request_seconds.labels(route).observe(elapsed)
        if route.startswith("/api/"):
            response.headers.setdefault("Cache-Control", "no-store")
        log.info(
            "http.request",
            method=request.method,
            route=route,
            status=response.status_code,
            ms=round(elapsed * 1000, 1),
        )
        return response

    api.add_middleware(SecurityHeaders, trusted_proxies=app.settings.trusted_proxy_networks)
    return api
