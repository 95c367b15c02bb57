"""The dashboard's HTML pages: sign in and out, the roster, a patient, the staff pages.

Pages read through the same services as the JSON API and start syncs only through it (the
page's JavaScript calls the API with the session's CSRF token). Forms are CSRF-protected:
before sign-in by a double-submit cookie, after it by the session's token. URLs hold ids
only; a search travels in a POST body, never in the address.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.orm import Session

from pqsync.db.tables import Organization
from pqsync.domain import visibility
from pqsync.services import calendar_feed, casework
from pqsync.services.auth import (
    InvalidCredentials,
    LoginThrottled,
    Principal,
    new_token,
    secrets_match,
)
from pqsync.services.dashboard import BadCursor, Dashboard, NotVisible, RosterRow, local_time
from pqsync.services.live_updates import change_mark
from pqsync.services.organizations import all_organizations, organization_by_id, patient_count
from pqsync.services.patient_page import patient_appointments, timeline
from pqsync.services.runs import running_sync_all
from pqsync.services.users import UserInputError, reset_user, use_reset
from pqsync.web.context import WebContext
from pqsync.web.deps import (
    SESSION_COOKIE,
    ContextDep,
    SessionDep,
    clear_session_cookie,
    forget_staff_organization,
    login_origin,
    remember_staff_organization,
    remembered_organization,
    set_signed_in_cookies,
)
from pqsync.web.page_support import (
    NO_TOKEN,
    CsrfField,
    PageNotFound,
    PageRoute,
    PageUser,
    check_form_token,
    render,
)
from pqsync.web.render import PAGE_HEADERS, appointment_time, consent_words, relative_time

LOGIN_CSRF_COOKIE = "pqsync_login_csrf"

router = APIRouter(route_class=PageRoute, include_in_schema=False)


# -- signing in and out ------------------------------------------------------------------


def login_page(
    ctx: WebContext,
    request: Request,
    *,
    error: str | None = None,
    email: str = "",
    status: int = 200,
) -> HTMLResponse:
    token = new_token()
    response = render(
        ctx,
        request,
        "login.html",
        None,
        csrf_token=token,
        error=error,
        email=email,
        status_code=status,
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        max_age=3600,
        httponly=True,
        samesite="strict",
        secure=ctx.secure_cookies,
        path="/login",
    )
    return response


@router.get("/login")
def login_form(request: Request, ctx: ContextDep, session: SessionDep) -> Response:
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie and ctx.auth.from_session_cookie(session, cookie) is not None:
        return RedirectResponse("/", status_code=303, headers=PAGE_HEADERS)
    return login_page(ctx, request)


@router.post("/login")
def login_submit(
    request: Request,
    ctx: ContextDep,
    session: SessionDep,
    csrf_token: CsrfField = NO_TOKEN,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    if not secrets_match(request.cookies.get(LOGIN_CSRF_COOKIE), csrf_token):
        return login_page(ctx, request, error="The form expired. Please sign in again.", status=400)
    client_ip, device = login_origin(request, ctx)
    try:
        result = ctx.auth.login(session, email, password, client_ip, device)
    except LoginThrottled as exc:
        at = (
            local_time(exc.retry_at, ZoneInfo(ctx.app.settings.timezone))
            .strftime("%I:%M %p")
            .lstrip("0")
        )
        message = f"Too many failed sign-ins. Try again after {at}."
        return login_page(ctx, request, error=message, email=email, status=429)
    except InvalidCredentials:
        return login_page(ctx, request, error="Wrong email or password.", email=email, status=401)
    response = RedirectResponse("/", status_code=303, headers=PAGE_HEADERS)
    set_signed_in_cookies(response, ctx, result)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout")
def logout_submit(
    user: PageUser, ctx: ContextDep, session: SessionDep, csrf_token: CsrfField = NO_TOKEN
) -> Response:
    check_form_token(user, csrf_token)
    if user.session_id is not None:
        ctx.auth.logout(session, user.session_id)
    response = RedirectResponse("/login", status_code=303, headers=PAGE_HEADERS)
    clear_session_cookie(response, ctx)
    return response


@router.get("/reset/{token}")
def reset_form(token: str, request: Request, ctx: ContextDep, session: SessionDep) -> Response:
    """The form a one-time reset link opens (the link is the proof: no session needed)."""
    user = reset_user(session, token, now=ctx.now())
    if user is None:
        return render(ctx, request, "reset.html", None, expired=True, status_code=404)
    return render(ctx, request, "reset.html", None, expired=False, token=token)


@router.post("/reset/{token}")
def reset_submit(
    token: str,
    request: Request,
    ctx: ContextDep,
    session: SessionDep,
    password: Annotated[str, Form(max_length=1000)] = "",
    again: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    if password != again:
        error = "The two passwords differ."
        return render(ctx, request, "reset.html", None, token=token, error=error, status_code=422)
    try:
        use_reset(session, token, password, now=ctx.now())
    except UserInputError as exc:
        error = f"{str(exc)[0].upper()}{str(exc)[1:]}."
        return render(ctx, request, "reset.html", None, token=token, error=error, status_code=422)
    return RedirectResponse("/login", status_code=303, headers=PAGE_HEADERS)


@router.post("/logout-everywhere")
def logout_everywhere_submit(
    user: PageUser, ctx: ContextDep, session: SessionDep, csrf_token: CsrfField = NO_TOKEN
) -> Response:
    """Sign out on every browser (a computer left signed in elsewhere)."""
    check_form_token(user, csrf_token)
    ctx.auth.logout_everywhere(session, user.user_id)
    response = RedirectResponse("/login", status_code=303, headers=PAGE_HEADERS)
    clear_session_cookie(response, ctx)
    return response


# -- the roster ----------------------------------------------------------------------------


def chosen_organization(
    dashboard: Dashboard, session: Session, org: str | None
) -> tuple[Organization | None, list[Organization]]:
    """Partners: their own organisation. Staff: the one they chose (none yet: None), and
    the list to choose from."""
    viewer = dashboard.viewer
    if not visibility.is_staff(viewer):
        own = organization_by_id(session, viewer.organization_id)
        if own is None:
            raise PageNotFound()
        return own, []
    choices = all_organizations(session)
    if not org:
        return None, choices
    try:
        return dashboard.organization(org), choices
    except NotVisible:
        raise PageNotFound() from None


def sync_window(ctx: WebContext, org: Organization, session: Session) -> tuple[str, str]:
    """The organisation's default date range (the one Sync all's run takes). The sync
    service checks the schema on a connection of its own: the page's session hands its
    connection back first, so a request never holds two (under load that drained the pool)."""
    session.commit()
    window = ctx.sync_service().organization_window(org)
    return window.start.isoformat(), window.end.isoformat()


@dataclass(frozen=True)
class RosterLine:
    """A roster row as the page shows it, every text made once in Python (the template
    only places them: 50 rows are rendered per request)."""

    id: uuid.UUID
    name: str
    provider: str
    next: str
    consent_needed: bool
    consent_text: str
    synced_iso: str | None
    synced_exact: str
    synced_ago: str


def roster_line(row: RosterRow, user: Principal, now: datetime) -> RosterLine:
    shown = visibility.details_visible(user, row.roi_consent.active)
    upcoming = row.next_appointment if shown else None
    synced = row.last_synced_at
    return RosterLine(
        id=row.id,
        name=row.name,
        provider=(upcoming.provider_name if upcoming else None) or "—",
        next=appointment_time(upcoming.start_time) if upcoming else "None scheduled",
        consent_needed=not shown,
        consent_text=consent_words(
            # An active consent that hides details is one past its date.
            "expired" if row.roi_consent.status == "active" else row.roi_consent.status,
            row.roi_consent.expires_on,
        ),
        synced_iso=synced.isoformat() if synced else None,
        synced_exact=appointment_time(synced),
        synced_ago=relative_time(synced, now),
    )


def casework_values(
    session: Session, user: Principal, org: Organization, now: datetime
) -> dict[str, Any]:
    """What the roster shows of issue 25's casework: needs attention, since the last visit
    (the residents they name are written to the access record before the page is sent)."""
    attention = casework.attention(session, user, org, now)
    changes = casework.since_last_visit(session, user, org, now)
    casework.record_shown(
        session,
        user,
        "roster_casework",
        attention.patient_ids + (changes.patient_ids if changes else []),
        now,
    )
    return {"attention": attention, "can_handle": visibility.may_sync(user), "changes": changes}


def roster_page(
    request: Request,
    ctx: WebContext,
    session: Session,
    user: Principal,
    *,
    org: str | None,
    search: str = "",
    cursor: str | None = None,
    show: str = "all",
    sort: str = "name",
    list_view: bool = False,
    page: int = 1,
) -> HTMLResponse:
    dashboard = ctx.dashboard(session, user)
    chosen, choices = chosen_organization(dashboard, session, org)
    values: dict[str, Any] = {
        "choices": choices,
        "org": chosen,
        "search": search,
        "can_sync": visibility.may_sync(user),
        "now": ctx.now(),
        "filters": casework.ROSTER_FILTERS,
        "sorts": casework.ROSTER_SORTS,
        "show": show if show in casework.ROSTER_FILTERS else "all",
        "sort": sort if sort in casework.ROSTER_SORTS else "name",
        "filtered": None,
    }
    narrowed_view = (values["show"], values["sort"]) != ("all", "name")
    if chosen is not None and (narrowed_view or (page != 1 and not list_view)):
        # Filters and sort (issue 25): their own query, paged by number.
        narrowed = casework.filtered_roster(
            session,
            user,
            chosen,
            values["now"],
            show=values["show"],
            sort=values["sort"],
            page=page,
        )
        values.update(
            rows=[roster_line(row, user, values["now"]) for row in narrowed.rows],
            next_cursor=None,
            paged=False,
            filtered=narrowed,
            running=running_sync_all(session, chosen.id),
            patient_total=patient_count(session, chosen.id),
            window=sync_window(ctx, chosen, session),
            **casework_values(session, user, chosen, values["now"]),
        )
    elif chosen is not None:
        try:
            size = ctx.app.settings.roster_page_size
            roster = dashboard.roster(chosen.id, search=search, cursor=cursor, limit=size)
        except BadCursor:
            roster = dashboard.roster(chosen.id, search=search, limit=size)
        dashboard.record("roster_page", [row.id for row in roster.rows])
        values.update(
            rows=[roster_line(row, user, values["now"]) for row in roster.rows],
            next_cursor=roster.next_cursor,
            paged=cursor is not None,
            page=page if cursor is not None else 1,
            running=running_sync_all(session, chosen.id),
            patient_total=patient_count(session, chosen.id),
            window=sync_window(ctx, chosen, session),
            **casework_values(session, user, chosen, values["now"]),
            change_mark=change_mark(session, organization_id=chosen.id),
            changes_url=f"/api/partner-dashboard/changes?organizationId={chosen.id}",
        )
    return render(ctx, request, "roster.html", user, **values)


# A search and its pages (Post/Redirect/Get): the POST keeps the search term and the page
# cursors (both can hold names) in a cookie of this browser's session and redirects to a
# GET whose URL holds only the organisation and the page number; Back and Reload then
# show the list again without asking to resend a form.
ROSTER_COOKIE = "pqsync_roster"
MAX_ROSTER_PAGES = 40


def _roster_state(request: Request) -> dict[str, Any]:
    raw = request.cookies.get(ROSTER_COOKIE, "")
    try:
        state = json.loads(base64.urlsafe_b64decode(raw.encode("ascii")))
    except (ValueError, UnicodeError):
        return {}
    return state if isinstance(state, dict) else {}


@router.get("/")
def roster(
    request: Request,
    ctx: ContextDep,
    session: SessionDep,
    user: PageUser,
    org: str | None = None,
    show: str = "all",
    sort: str = "name",
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
    view: str | None = None,
) -> HTMLResponse:
    search, cursor = "", None
    # Staff: no organisation in the address (the "Patients" link) is the one last chosen.
    remembered = remembered_organization(request) if user.is_staff and not org else None
    org = org or remembered
    if view == "list":
        state = _roster_state(request)
        if state.get("org", "") == (org or ""):
            search = str(state.get("q", ""))[:100]
            cursors = [str(c) for c in state.get("cursors", []) if isinstance(c, str)]
            cursor = cursors[page - 2] if 2 <= page <= len(cursors) + 1 else None

    def roster_for(org: str | None) -> HTMLResponse:
        return roster_page(
            request,
            ctx,
            session,
            user,
            org=org,
            search=search,
            cursor=cursor,
            show=show,
            sort=sort,
            page=page,
            list_view=view == "list",
        )

    try:
        response = roster_for(org)
    except PageNotFound:
        if remembered is None:
            raise
        response = roster_for(None)  # the remembered organisation is gone: choose again
        forget_staff_organization(response, ctx)
        return response
    if user.is_staff and org:
        remember_staff_organization(response, ctx, org)
    return response


@router.post("/")
def roster_search(
    request: Request,
    ctx: ContextDep,
    user: PageUser,
    csrf_token: CsrfField = NO_TOKEN,
    q: Annotated[str, Form(max_length=100)] = "",
    org: Annotated[str, Form(max_length=64)] = "",
    cursor: Annotated[str, Form(max_length=80)] = "",
    page: Annotated[int, Form(ge=1, le=MAX_ROSTER_PAGES)] = 1,
) -> Response:
    """A search (page 1) or its next page: remembered, then shown by a redirect to GET."""
    check_form_token(user, csrf_token)
    search = q.strip()
    state = _roster_state(request)
    cursors: list[str] = []
    if cursor:
        if state.get("q") == search and state.get("org") == org:
            cursors = [str(c) for c in state.get("cursors", [])]
        cursors = [*cursors[: page - 1], cursor]
    shown = len(cursors) + 1
    value = {"org": org, "q": search, "cursors": cursors}
    location = "/?" + urlencode({"view": "list", **({"org": org} if org else {}), "page": shown})
    response = RedirectResponse(location, status_code=303, headers=PAGE_HEADERS)
    response.set_cookie(
        ROSTER_COOKIE,
        base64.urlsafe_b64encode(json.dumps(value).encode()).decode("ascii"),
        httponly=True,
        samesite="strict",
        secure=ctx.secure_cookies,
        path="/",
    )
    return response


# -- a patient -----------------------------------------------------------------------------


@router.get("/patients/{patient_id}")
def patient(
    patient_id: str, request: Request, ctx: ContextDep, session: SessionDep, user: PageUser
) -> HTMLResponse:
    dashboard = ctx.dashboard(session, user)
    try:
        scope = dashboard.patient(patient_id)
    except NotVisible:
        raise PageNotFound() from None
    appointments = patient_appointments(dashboard, scope) if scope.details_visible else None
    dashboard.record("patient_page", [scope.patient.id])
    # A partner's own address for this resident's appointments (staff have no feed).
    may_feed = scope.details_visible and calendar_feed.may_have_feed(
        user.role, user.organization_id
    )
    resident_feed = (
        calendar_feed.resident_path(
            session,
            user.user_id,
            scope.patient.id,
            ctx.app.settings.secret_key.get_secret_value(),
        )
        if may_feed
        else None
    )
    return render(
        ctx,
        request,
        "patient.html",
        user,
        scope=scope,
        appointments=appointments,
        timeline=timeline(dashboard, scope),
        last_sync=dashboard.sync_history(scope).last_sync,
        can_sync=visibility.may_sync(user),
        now=ctx.now(),
        change_mark=change_mark(session, patient_id=scope.patient.id),
        changes_url=f"/api/partner-dashboard/changes?patientId={scope.patient.id}",
        may_feed=may_feed,
        resident_feed=(
            ctx.app.settings.base_url.rstrip("/") + resident_feed if resident_feed else None
        ),
    )
