"""Logging in and out of the dashboard (session cookie + CSRF token)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from pqsync.services.auth import InvalidCredentials, LoginThrottled, Principal
from pqsync.web.deps import (
    ContextDep,
    CurrentUser,
    SessionDep,
    clear_session_cookie,
    set_session_cookie,
)
from pqsync.web.errors import ApiError, responses, retry_later
from pqsync.web.schemas import LoginRequest, SessionOut, UserOut

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

    After 5 failed logins in 15 minutes for one email or one address: 429 until the window
    frees up (`Retry-After`)."""
    client_ip = request.client.host if request.client else None
    try:
        result = ctx.auth.login(session, body.email, body.password, client_ip)
    except LoginThrottled as exc:
        raise retry_later(
            "too_many_attempts",
            f"too many failed logins; try again after {exc.retry_at.isoformat(timespec='seconds')}",
            retry_at=exc.retry_at,
            now=ctx.now(),
        ) from None
    except InvalidCredentials:
        raise ApiError(401, "invalid_credentials", "wrong email or password") from None
    set_session_cookie(response, ctx, result.cookie_token)
    return session_out(result.principal)


@router.post("/logout", status_code=204, response_class=Response, responses=responses(401, 403))
def logout(user: CurrentUser, ctx: ContextDep, session: SessionDep) -> Response:
    """End the cookie's session (a bearer token stays valid: revoke it with the CLI)."""
    if user.session_id is not None:
        ctx.auth.logout(session, user.session_id)
    answer = Response(status_code=204)
    clear_session_cookie(answer, ctx)
    return answer


@router.get("/me", responses=responses(401))
def me(user: CurrentUser) -> SessionOut:
    """Who is logged in, with the session's CSRF token (null for bearer tokens)."""
    return session_out(user)
