"""Every error leaves as `{"error": {"code", "message"}}`, never a traceback."""

from __future__ import annotations

import math
import traceback
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from pqsync.bootstrap import NotSetUp
from pqsync.logging import get_logger
from pqsync.web.schemas import ErrorResponse, error_body

log = get_logger("pqsync.web")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    502: "bad_gateway",
    503: "unavailable",
}


class ApiError(Exception):
    """An answer other than success, in the API's error shape."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        run_id: uuid.UUID | None = None,
        retry_at: datetime | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.run_id = run_id
        self.retry_at = retry_at

    def response(self) -> JSONResponse:
        body = error_body(self.code, self.message, run_id=self.run_id, retry_at=self.retry_at)
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def error_facts(exc: BaseException) -> dict[str, str]:
    """What may be logged of an exception: its type and frames, never its message (messages
    can quote SQL parameters, that is patient data)."""
    return {
        "error_type": type(exc).__name__,
        "stack": "".join(traceback.format_tb(exc.__traceback__)),
    }


def retry_later(
    code: str, message: str, *, retry_at: datetime, now: datetime, run_id: uuid.UUID | None = None
) -> ApiError:
    """429 with `Retry-After` (whole seconds) and `retryAt`."""
    wait = max(1, math.ceil((retry_at - now).total_seconds()))
    return ApiError(
        429,
        code,
        message,
        headers={"Retry-After": str(wait)},
        run_id=run_id,
        retry_at=retry_at,
    )


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"no such {what}")


def unauthenticated() -> ApiError:
    return ApiError(
        401,
        "unauthenticated",
        "log in, or send Authorization: Bearer <token>",
        headers={"WWW-Authenticate": "Bearer"},
    )


def _field(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "cookie")]
    return ".".join(parts) or ("the request body" if loc[:1] == ("body",) else "the request")


def validation_message(exc: RequestValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "the request is invalid"
    first = errors[0]
    if first.get("type") == "json_invalid":
        return "the request body is not valid JSON"
    message = str(first.get("msg", "is invalid"))
    if first.get("type") == "missing":
        message = "is required"
    return f"{_field(first.get('loc', ()))}: {message}"


def wants_page(request: Request) -> bool:
    """A person's browser asking for a page (not the JSON API, not a script): it gets a calm
    HTML page in the app's frame; everything under /api keeps the JSON error shape."""
    path = request.url.path
    if path == "/api" or path.startswith(("/api/", "/static/")):
        return False
    return "text/html" in request.headers.get("accept", "")


def _page_problem(request: Request, status: int) -> Response:
    """The problem page for `status`, in the frame of whoever is signed in (if anyone)."""
    from pqsync.web.page_support import BROKEN, FORBIDDEN, NOT_FOUND, Problem, problem_page

    problem: Problem = {404: NOT_FOUND, 403: FORBIDDEN}.get(status, BROKEN)
    if status not in (403, 404, 500):
        problem = Problem(
            status,
            "Not available" if status < 500 else "Something went wrong",
            "This page cannot be shown. Nothing was changed. Go back to the patient list "
            "and try again.",
        )
    return problem_page(request, problem)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return ApiError(422, "invalid_request", validation_message(exc)).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if wants_page(request) and exc.status_code >= 400 and exc.status_code != 401:
            return _page_problem(request, exc.status_code)
        code = _HTTP_CODES.get(exc.status_code, "error")
        message = "no such endpoint" if exc.status_code == 404 else str(exc.detail)
        headers = dict(exc.headers or {})
        return ApiError(exc.status_code, code, message, headers=headers).response()

    @app.exception_handler(DataError)
    async def _unstorable(request: Request, exc: DataError) -> JSONResponse:
        # A value the database cannot take (a NUL byte, a number out of range): the
        # request's fault, but also a gap in our validation, so it is logged.
        route = getattr(request.scope.get("route"), "path", "unmatched")
        log.warning("http.unstorable_input", route=route, **error_facts(exc))
        return ApiError(422, "invalid_request", "a value in the request cannot be used").response()

    @app.exception_handler(NotSetUp)
    async def _not_set_up(request: Request, exc: NotSetUp) -> Response:
        if wants_page(request):
            return _page_problem(request, 503)
        return ApiError(503, "unavailable", "the service is not set up yet").response()

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> Response:
        reference = uuid.uuid4().hex[:12]
        route = getattr(request.scope.get("route"), "path", "unmatched")
        log.error(
            "http.unhandled_error",
            reference=reference,
            method=request.method,
            route=route,
            **error_facts(exc),
        )
        if wants_page(request):
            return _page_problem(request, 500)
        return ApiError(
            500, "internal_error", f"something went wrong on our side (reference {reference})"
        ).response()


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the error statuses a route can answer."""
    return {status: {"model": ErrorResponse} for status in statuses}
