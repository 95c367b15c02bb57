"""Typed dependencies: the context, a database session, the caller and role guards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Annotated, cast

from fastapi import Depends, Query, Request, Response
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from pqsync.domain import visibility
from pqsync.services.auth import (
    DEVICE_LIFETIME,
    SESSION_LIFETIME,
    LoginResult,
    Principal,
    secrets_match,
)
from pqsync.services.dashboard import Dashboard
from pqsync.web.context import WebContext
from pqsync.web.errors import ApiError, unauthenticated
from pqsync.web.security import client_address

SESSION_COOKIE = "pqsync_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_bearer = HTTPBearer(auto_error=False, description="An API token from `pqsync users token`.")
_cookie = APIKeyCookie(
    name=SESSION_COOKIE, auto_error=False, description="Set by POST /api/auth/login."
)
_cron = HTTPBearer(auto_error=False, scheme_name="CronSecret", description="PQSYNC_CRON_SECRET.")
_metrics = HTTPBearer(
    auto_error=False, scheme_name="MetricsToken", description="PQSYNC_METRICS_TOKEN."
)


def set_session_cookie(response: Response, ctx: WebContext, token: str) -> None:
    """The browser's session: HttpOnly, SameSite=Lax, Secure outside development."""
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(SESSION_LIFETIME.total_seconds()),
        httponly=True,
        samesite="lax",
        secure=ctx.secure_cookies,
        path="/",
    )


# Marks a browser that signed in to an account before (see services/auth.py); sent on every
# path so that both the JSON login and the sign-in page recognise it.
DEVICE_COOKIE = "pqsync_device"


def login_origin(request: Request, ctx: WebContext) -> tuple[str | None, str | None]:
    """Where a login comes from: the client's address (X-Forwarded-For believed only from
    PQSYNC_TRUSTED_PROXIES) and the browser's device cookie, as login throttling reads them."""
    address = client_address(request.scope, ctx.app.settings.trusted_proxy_networks)
    return address, request.cookies.get(DEVICE_COOKIE)


def set_signed_in_cookies(response: Response, ctx: WebContext, result: LoginResult) -> None:
    """The session cookie, and the device cookie that marks this browser for the account."""
    set_session_cookie(response, ctx, result.cookie_token)
    response.set_cookie(
        DEVICE_COOKIE,
        result.device_token,
        max_age=int(DEVICE_LIFETIME.total_seconds()),
        httponly=True,
        samesite="strict",
        secure=ctx.secure_cookies,
        path="/",
    )


def clear_session_cookie(response: Response, ctx: WebContext) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=ctx.secure_cookies
    )
    forget_staff_organization(response, ctx)


# The organisation a member of staff last chose (issue 24): the roster and the staff pages
# open on it until another is chosen. It holds an organisation's id only, no patient data,
# and is cleared on signing out.
STAFF_ORG_COOKIE = "pqsync_staff_org"


def remembered_organization(request: Request) -> str | None:
    """The organisation id this browser's staff member last chose (a well-formed id only)."""
    raw = request.cookies.get(STAFF_ORG_COOKIE, "")
    try:
        return str(uuid.UUID(raw)) if raw else None
    except ValueError:
        return None


def remember_staff_organization(response: Response, ctx: WebContext, org_id: str) -> None:
    response.set_cookie(
        STAFF_ORG_COOKIE,
        org_id,
        path="/",
        httponly=True,
        samesite="lax",
        secure=ctx.secure_cookies,
    )


def forget_staff_organization(response: Response, ctx: WebContext) -> None:
    response.delete_cookie(
        STAFF_ORG_COOKIE, path="/", httponly=True, samesite="lax", secure=ctx.secure_cookies
    )


def get_context(request: Request) -> WebContext:
    return cast(WebContext, request.app.state.pqsync)


ContextDep = Annotated[WebContext, Depends(get_context)]


def get_session(ctx: ContextDep) -> Iterator[Session]:
    with Session(ctx.app.engine, expire_on_commit=False) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def current_user(
    request: Request,
    ctx: ContextDep,
    session: SessionDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    cookie: Annotated[str | None, Depends(_cookie)],
) -> Principal:
    """The caller, by bearer token or session cookie; cookie callers must send the CSRF
    token with every state-changing request (bearer callers are exempt: no browser sends
    a bearer token on its own)."""
    if bearer is not None:
        principal = ctx.auth.from_bearer(session, bearer.credentials)
        if principal is None:
            raise unauthenticated()
        return principal
    if request.headers.get("Authorization") or not cookie:
        raise unauthenticated()
    principal = ctx.auth.from_session_cookie(session, cookie)
    if principal is None:
        raise unauthenticated()
    csrf = request.headers.get(CSRF_HEADER)
    if request.method not in SAFE_METHODS and not (
        principal.csrf_token and secrets_match(csrf, principal.csrf_token)
    ):
        raise ApiError(403, "csrf_failed", f"missing or wrong {CSRF_HEADER} header")
    return principal


CurrentUser = Annotated[Principal, Depends(current_user)]


def sync_user(user: CurrentUser) -> Principal:
    """Staff, partner admins and case managers may start syncs; viewers only read."""
    if not visibility.may_sync(user):
        raise ApiError(403, "forbidden", f"the {user.role} role may not start a sync")
    return user


SyncUser = Annotated[Principal, Depends(sync_user)]


def dashboard_for(ctx: ContextDep, session: SessionDep, user: CurrentUser) -> Dashboard:
    return ctx.dashboard(session, user)


DashboardDep = Annotated[Dashboard, Depends(dashboard_for)]


def cron_caller(
    ctx: ContextDep, bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_cron)]
) -> None:
    expected = ctx.app.settings.cron_secret.get_secret_value()
    if bearer is None or not secrets_match(bearer.credentials, expected):
        raise ApiError(
            401,
            "unauthenticated",
            "send Authorization: Bearer <PQSYNC_CRON_SECRET>",
            headers={"WWW-Authenticate": "Bearer"},
        )


CronCaller = Depends(cron_caller)


def metrics_caller(
    ctx: ContextDep, bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_metrics)]
) -> None:
    token = ctx.app.settings.metrics_token
    # With no token configured the endpoint is off: it looks like no endpoint at all.
    if token is None or not token.get_secret_value():
        raise ApiError(404, "not_found", "no such endpoint")
    if bearer is None or not secrets_match(bearer.credentials, token.get_secret_value()):
        raise ApiError(
            401,
            "unauthenticated",
            "send Authorization: Bearer <PQSYNC_METRICS_TOKEN>",
            headers={"WWW-Authenticate": "Bearer"},
        )


MetricsCaller = Depends(metrics_caller)


def webhook_caller(
    ctx: ContextDep,
    token: Annotated[
        str | None, Query(description="PQSYNC_WEBHOOK_TOKEN, as configured in IntakeQ.")
    ] = None,
) -> None:
    # A wrong token looks like no endpoint at all.
    if not secrets_match(token, ctx.app.settings.webhook_token.get_secret_value()):
        raise ApiError(404, "not_found", "no such endpoint")


WebhookCaller = Depends(webhook_caller)


def may_see_operations(
    ctx: ContextDep,
    session: SessionDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_metrics)],
    cookie: Annotated[str | None, Depends(_cookie)],
) -> bool:
    """Whether the caller may read operational details (workers, queue, every organisation's
    last sync): the metrics token, or a staff member. Anyone else, or nobody, may not."""
    token = ctx.app.settings.metrics_token
    expected = token.get_secret_value() if token is not None else ""
    if bearer is not None:
        if expected and secrets_match(bearer.credentials, expected):
            return True
        principal = ctx.auth.from_bearer(session, bearer.credentials)
    elif cookie:
        principal = ctx.auth.from_session_cookie(session, cookie)
    else:
        return False
    return principal is not None and principal.is_staff


OperationsReader = Annotated[bool, Depends(may_see_operations)]
