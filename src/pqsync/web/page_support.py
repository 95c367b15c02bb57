"""What every dashboard page shares: who is signed in, role guards, form tokens, rendering,
and the calm page a failure turns into (never a traceback; the details go to the log)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Form, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from sqlalchemy.orm import Session

from pqsync.logging import get_logger
from pqsync.services.auth import Principal, secrets_match
from pqsync.web.context import WebContext
from pqsync.web.deps import SESSION_COOKIE, ContextDep, SessionDep
from pqsync.web.errors import error_facts
from pqsync.web.render import PAGE_HEADERS, page

log = get_logger("pqsync.web.pages")


class SignInNeeded(Exception):
    """No valid session: the page sends the browser to the sign-in page."""


class PageNotFound(Exception):
    """No such thing, or not the viewer's to see (never told apart)."""


class PageForbidden(Exception):
    """Signed in, but the role may not open this page."""


class FormExpired(Exception):
    """A form came without its token, or with another session's."""


@dataclass(frozen=True)
class Problem:
    status: int
    heading: str
    message: str


NOT_FOUND = Problem(404, "Not found", "There is nothing here, or it is not yours to see.")
FORBIDDEN = Problem(403, "Not available", "Your role cannot open this page.")
EXPIRED = Problem(
    403,
    "Form expired",
    "This form is out of date: nothing was changed. Reload the page and try again.",
)
BROKEN = Problem(
    500,
    "Something went wrong",
    "The page could not be shown. Nothing was changed. Try again in a minute; if it keeps "
    "happening, tell the clinic (the details are in its log).",
)


class PageRoute(APIRoute):
    """A page never shows a traceback: failures become a calm page, details go to the log."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        path = self.path

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInNeeded:
                return RedirectResponse("/login", status_code=303, headers=PAGE_HEADERS)
            except (PageNotFound, RequestValidationError):
                return problem_page(request, NOT_FOUND)
            except PageForbidden:
                return problem_page(request, FORBIDDEN)
            except FormExpired:
                return problem_page(request, EXPIRED)
            except Exception as exc:
                log.error("page.failed", route=path, **error_facts(exc))
                return problem_page(request, BROKEN)

        return guarded


def problem_page(request: Request, problem: Problem) -> HTMLResponse:
    """The calm page for `problem`, in the frame of whoever is signed in (if anyone)."""
    ctx: WebContext = request.app.state.pqsync
    return page(
        ctx.templates,
        request,
        "problem.html",
        {"problem": problem, "user": _signed_in_or_none(ctx, request)},
        status_code=problem.status,
    )


def _signed_in_or_none(ctx: WebContext, request: Request) -> Principal | None:
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    try:
        with Session(ctx.app.engine) as session:
            return ctx.auth.from_session_cookie(session, cookie)
    except Exception:  # the page about a problem must not fail itself (the database may be down)
        return None


def signed_in(request: Request, ctx: ContextDep, session: SessionDep) -> Principal:
    cookie = request.cookies.get(SESSION_COOKIE)
    principal = ctx.auth.from_session_cookie(session, cookie) if cookie else None
    if principal is None:
        raise SignInNeeded()
    return principal


PageUser = Annotated[Principal, Depends(signed_in)]


def staff_only(user: PageUser) -> Principal:
    if not user.is_staff:
        raise PageForbidden()
    return user


StaffUser = Annotated[Principal, Depends(staff_only)]
CsrfField = Annotated[str, Form(alias="csrf_token", max_length=200)]
NO_TOKEN = ""  # a form without its token is refused as expired, not as malformed


def check_form_token(user: Principal, token: str) -> None:
    if not (user.csrf_token and secrets_match(token, user.csrf_token)):
        raise FormExpired()


def render(
    ctx: WebContext, request: Request, name: str, user: Principal | None, **values: Any
) -> HTMLResponse:
    status = values.pop("status_code", 200)
    return page(ctx.templates, request, name, {"user": user, **values}, status_code=status)
