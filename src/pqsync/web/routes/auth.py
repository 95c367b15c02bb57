"""Logging in and out of the dashboard (session cookie + CSRF token)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from pqsync.services.auth import InvalidCredentials, LoginThrottled, Principal
from pqsync.web.deps import (
    ContextDep,
    CurrentUser,
    SessionDep,
    clear_session_cookie,
    login_origin,
    set_signed_in_cookies,
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

    A successful login also sets a device cookie for the account. Failed logins slow down
    the browser they come from: after 5 in 15 minutes for one (address, account), 429 for a
    minute, doubling up to 15 (`Retry-After`); after 20 for one account from browsers that
    never signed in to it, they wait 15 minutes. A browser with the account's device cookie
    is held back only by its own failures."""
    client_ip, device = login_origin(request, ctx)
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
    set_signed_in_cookies(response, ctx, result)
    return session_out(result.principal)


@router.post("/logout", status_code=204, response_class=Response, responses=responses(401, 403))
def logout(user: CurrentUser, ctx: ContextDep, session: SessionDep) -> Response:
    """End the cookie's session (a bearer token stays valid: revoke it with the CLI)."""
    if user.session_id is not None:
        ctx.auth.logout(session, user.session_id)
    answer = Response(status_code=204)
    clear_session_cookie(answer, ctx)
    return answer


@router.post(
    "/logout-everywhere",
    status_code=204,
    response_class=Response,
    responses=responses(401, 403),
)
def logout_everywhere(user: CurrentUser, ctx: ContextDep, session: SessionDep) -> Response:
    """End every session of the caller, on every browser (API tokens stay valid)."""
    ctx.auth.logout_everywhere(session, user.user_id)
    answer = Response(status_code=204)
    clear_session_cookie(answer, ctx)
    return answer


@router.get("/me", responses=responses(401))
def me(user: CurrentUser) -> SessionOut:
    """Who is logged in, with the session's CSRF token (null for bearer tokens)."""
    return session_out(user)
