"""Logging in and out of the dashboard (session cookie + CSRF token)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from pqsync.services.auth import (
    DEVICE_LIFETIME,
    SESSION_LIFETIME,
    InvalidCredentials,
    LoginThrottled,
    Principal,
)
from pqsync.web.deps import SESSION_COOKIE, ContextDep, CurrentUser, SessionDep
from pqsync.web.errors import ApiError, responses, retry_later
from pqsync.web.schemas import LoginRequest, SessionOut, UserOut
from pqsync.web.security import client_address

# Marks a browser that signed in to an account before (see services/auth.py); sent on every
# path so that a login form elsewhere (the HTML pages) is recognised too.
DEVICE_COOKIE = "pqsync_device"

router = APIRouter(prefix="/api/auth", tags=["auth"])


def session_out(principal: Principal) -> SessionOut:
    user = UserOut(
        id=principal.user_id,
        email=principal.email,
        name=principal.name,
        role=principal.role,
        organization_id=principal.organization_id,
        organization_name=principal.organization_name,
    )
    return SessionOut(user=user, csrf_token=principal.csrf_token)


@router.post("/login", responses=responses(400, 401, 422, 429))
def login(
    body: LoginRequest, request: Request, response: Response, ctx: ContextDep, session: SessionDep
) -> SessionOut:
    """Check email and password; set the session cookie and return the CSRF token.

    A successful login also sets a device cookie for the account. Failed logins slow down
    the browser they come from: after 5 in 15 minutes for one (address, account), 429 for a
    minute, doubling up to 15 (`Retry-After`); after 20 for one account from browsers that
    never signed in to it, they wait 15 minutes. A browser with the account's device cookie
    is held back only by its own failures."""
    client_ip = client_address(request.scope, ctx.app.settings.trusted_proxy_networks)
    device = request.cookies.get(DEVICE_COOKIE)
    try:
        result = ctx.auth.login(session, body.email, body.password, client_ip, device)
    except LoginThrottled as exc:
        raise retry_later(
            "too_many_attempts",
            f"too many failed logins; try again after {exc.retry_at.isoformat(timespec='seconds')}",
            retry_at=exc.retry_at,
            now=ctx.now(),
        ) from None
    except InvalidCredentials:
        raise ApiError(401, "invalid_credentials", "wrong email or password") from None
    response.set_cookie(
        SESSION_COOKIE,
        result.cookie_token,
        max_age=int(SESSION_LIFETIME.total_seconds()),
        httponly=True,
        samesite="lax",
        secure=ctx.secure_cookies,
        path="/",
    )
    response.set_cookie(
        DEVICE_COOKIE,
        result.device_token,
        max_age=int(DEVICE_LIFETIME.total_seconds()),
        httponly=True,
        samesite="strict",
        secure=ctx.secure_cookies,
        path="/",
    )
    return session_out(result.principal)


@router.post("/logout", status_code=204, response_class=Response, responses=responses(401, 403))
def logout(user: CurrentUser, ctx: ContextDep, session: SessionDep) -> Response:
    """End the cookie's session (a bearer token stays valid: revoke it with the CLI)."""
    if user.session_id is not None:
        ctx.auth.logout(session, user.session_id)
    answer = Response(status_code=204)
    answer.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=ctx.secure_cookies
    )
    return answer


@router.get("/me", responses=responses(401))
def me(user: CurrentUser) -> SessionOut:
    """Who is logged in, with the session's CSRF token (null for bearer tokens)."""
    return session_out(user)
