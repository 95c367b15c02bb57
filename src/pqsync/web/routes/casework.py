"""A case manager's pages: this week, a resident's attendance record (page and CSV), the
roster as CSV, marking a 'needs attention' item handled, and the calendar feed.

Everything goes through the same scoping as the roster (a partner: their own organisation;
staff: the one chosen by `org`), and appointment details only for residents whose ROI
consent is active. Every export (the printable record, each CSV, each feed answered) is
written to the history of each resident it holds: who, when, which range.
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.orm import Session

from pqsync.db.tables import Organization
from pqsync.domain import visibility
from pqsync.domain.windows import EARLIEST_DAY, LATEST_DAY
from pqsync.services import calendar_feed, casework, digest
from pqsync.services.auth import Principal
from pqsync.services.dashboard import Dashboard, NotVisible
from pqsync.web.deps import ContextDep, SessionDep
from pqsync.web.page_support import (
    NO_TOKEN,
    CsrfField,
    PageForbidden,
    PageNotFound,
    PageRoute,
    PageUser,
    check_form_token,
    render,
)
from pqsync.web.render import PAGE_HEADERS
from pqsync.web.routes.pages import chosen_organization

router = APIRouter(route_class=PageRoute, include_in_schema=False)
feed_router = APIRouter(include_in_schema=False)

ATTENDANCE_DAYS_DEFAULT = 90
ATTENDANCE_DAYS_MAX = 3 * 366


def own_organization(
    ctx: ContextDep, session: Session, user: Principal, org: str | None
) -> tuple[Dashboard, Organization]:
    dashboard = ctx.dashboard(session, user)
    chosen, _choices = chosen_organization(dashboard, session, org)
    if chosen is None:
        raise PageNotFound()
    return dashboard, chosen


def parse_day(text: str | None) -> date | None:
    if not text:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise PageNotFound() from None
    if not EARLIEST_DAY <= day <= LATEST_DAY:
        raise PageNotFound()  # (a week or a record around year 1 or 9999 cannot be drawn)
    return day


def org_query(user: Principal, org: Organization) -> str:
    return f"org={org.id}&" if user.is_staff else ""


# -- this week -----------------------------------------------------------------------------


@router.get("/week")
def week_page(
    request: Request,
    ctx: ContextDep,
    session: SessionDep,
    user: PageUser,
    org: str | None = None,
    of: str | None = None,
) -> HTMLResponse:
    _dashboard, chosen = own_organization(ctx, session, user, org)
    week = casework.week(session, user, chosen, ctx.now(), parse_day(of))
    shown = [entry.patient_id for day in week.days for entry in day.entries]
    casework.record_shown(session, user, "week", shown, ctx.now())
    return render(
        ctx, request, "week.html", user, org=chosen, week=week, org_query=org_query(user, chosen)
    )


# -- needs attention -------------------------------------------------------------------------


@router.post("/attention/handled")
def attention_handled(
    ctx: ContextDep,
    session: SessionDep,
    user: PageUser,
    csrf_token: CsrfField = NO_TOKEN,
    org: Annotated[str, Form(max_length=64)] = "",
    patient: Annotated[str, Form(max_length=64)] = "",
    key: Annotated[str, Form(max_length=120)] = "",
) -> Response:
    check_form_token(user, csrf_token)
    if not visibility.may_sync(user):
        raise PageForbidden()
    _dashboard, chosen = own_organization(ctx, session, user, org or None)
    try:
        casework.mark_handled(session, user, chosen, uuid.UUID(patient), key, ctx.now())
    except (ValueError, casework.NotHandleable):
        raise PageNotFound() from None
    target = f"/?org={chosen.id}#attention" if user.is_staff else "/#attention"
    return RedirectResponse(target, status_code=303, headers=PAGE_HEADERS)


@router.post("/changes/dismiss")
def changes_dismiss(
    ctx: ContextDep,
    session: SessionDep,
    user: PageUser,
    csrf_token: CsrfField = NO_TOKEN,
    org: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    check_form_token(user, csrf_token)
    casework.dismiss_changes(session, user.user_id, ctx.now())
    target = f"/?org={org}" if user.is_staff and org else "/"
    return RedirectResponse(target, status_code=303, headers=PAGE_HEADERS)


# -- records to hand on ----------------------------------------------------------------------


def attendance_record(
    ctx: ContextDep,
    session: Session,
    user: Principal,
    patient_id: str,
    start: str | None,
    end: str | None,
) -> casework.AttendanceRecord:
    dashboard = ctx.dashboard(session, user)
    try:
        scope = dashboard.patient(patient_id)
    except NotVisible:
        raise PageNotFound() from None
    if not scope.details_visible or scope.organization is None:
        raise PageForbidden()
    today = dashboard.today_in(scope.zone)
    last = parse_day(end) or today
    first = parse_day(start) or last - timedelta(days=ATTENDANCE_DAYS_DEFAULT)
    if first > last or (last - first).days > ATTENDANCE_DAYS_MAX:
        raise PageNotFound()
    return casework.attendance(session, scope.organization, scope.patient, first, last, ctx.now())


@router.get("/patients/{patient_id}/attendance")
def attendance_page(
    patient_id: str,
    request: Request,
    ctx: ContextDep,
    session: SessionDep,
    user: PageUser,
    start: str | None = None,
    end: str | None = None,
) -> HTMLResponse:
    record = attendance_record(ctx, session, user, patient_id, start, end)
    casework.record_export(
        session,
        user=user,
        view="attendance_page",
        patient_ids=[record.patient_id],
        detail=f"Attendance record opened for printing, {record.range_text}",
        now=ctx.now(),
    )
    return render(ctx, request, "attendance.html", user, record=record, now=ctx.now())


@router.get("/patients/{patient_id}/attendance.csv")
def attendance_csv(
    patient_id: str,
    ctx: ContextDep,
    session: SessionDep,
    user: PageUser,
    start: str | None = None,
    end: str | None = None,
) -> Response:
    record = attendance_record(ctx, session, user, patient_id, start, end)
    text = casework.csv_text(
        ["Resident", "Date", "Time", "Provider", "Service", "Location", "Outcome"],
        [
            [
                record.patient_name,
                line.date,
                line.time,
                line.provider,
                line.service,
                line.location,
                line.outcome,
            ]
            for line in record.lines
        ],
    )
    casework.record_export(
        session,
        user=user,
        view="attendance_csv",
        patient_ids=[record.patient_id],
        detail=f"Attendance record downloaded as CSV, {record.range_text}",
        now=ctx.now(),
    )
    name = f"attendance-{record.first_day.isoformat()}-{record.last_day.isoformat()}.csv"
    return csv_response(text, name)


@router.get("/roster.csv")
def roster_csv(
    ctx: ContextDep, session: SessionDep, user: PageUser, org: str | None = None
) -> Response:
    _dashboard, chosen = own_organization(ctx, session, user, org)
    rows = casework.roster_export(session, user, chosen, ctx.now())
    text = casework.csv_text(
        [
            "Resident",
            "ROI consent",
            "Provider of the next appointment",
            "Next appointment",
            "Last synced",
        ],
        [[r.name, r.consent, r.provider, r.next_appointment, r.last_synced] for r in rows],
    )
    casework.record_export(
        session,
        user=user,
        view="roster_csv",
        patient_ids=[r.patient_id for r in rows],
        detail="Roster downloaded as CSV",
        now=ctx.now(),
    )
    return csv_response(text, f"roster-{casework.org_today(chosen, ctx.now()).isoformat()}.csv")


def csv_response(text: str, filename: str) -> Response:
    return Response(
        text.encode("utf-8-sig"),
        media_type="text/csv; charset=utf-8",
        headers={**PAGE_HEADERS, "Content-Disposition": f'attachment; filename="{filename}"'},
    )


# -- the calendar feed -----------------------------------------------------------------------


@router.get("/calendar")
def calendar_page(
    request: Request, ctx: ContextDep, session: SessionDep, user: PageUser
) -> HTMLResponse:
    if not calendar_feed.may_have_feed(user.role, user.organization_id):
        raise PageForbidden()
    return _calendar(request, ctx, session, user, address=None)


def _calendar(
    request: Request, ctx: ContextDep, session: Session, user: Principal, *, address: str | None
) -> HTMLResponse:
    """The calendar page: the feed's state, the address when just made, the digest choice."""
    return render(
        ctx,
        request,
        "calendar.html",
        user,
        state=calendar_feed.feed_state(session, user.user_id),
        address=address,
        digest=digest.opted_in(session, user.user_id),
        may_digest=user.role in digest.DIGEST_ROLES,
    )


@router.post("/calendar")
def calendar_reset(
    request: Request,
    ctx: ContextDep,
    session: SessionDep,
    user: PageUser,
    csrf_token: CsrfField = NO_TOKEN,
    action: Annotated[str, Form(max_length=16)] = "reset",
) -> HTMLResponse:
    check_form_token(user, csrf_token)
    if not calendar_feed.may_have_feed(user.role, user.organization_id):
        raise PageForbidden()
    address = None
    if action == "stop":
        calendar_feed.stop_feed(session, user.user_id)
    else:
        token = calendar_feed.reset_address(session, user.user_id, ctx.now())
        address = ctx.app.settings.base_url.rstrip("/") + f"/calendar/{token}.ics"
    return _calendar(request, ctx, session, user, address=address)


@router.post("/digest")
def digest_choice(
    ctx: ContextDep,
    session: SessionDep,
    user: PageUser,
    csrf_token: CsrfField = NO_TOKEN,
    daily: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    check_form_token(user, csrf_token)
    if user.role not in digest.DIGEST_ROLES or user.organization_id is None:
        raise PageForbidden()
    digest.set_opt_in(session, user.user_id, daily == "yes")
    return RedirectResponse("/calendar", status_code=303, headers=PAGE_HEADERS)


FEED_HEADERS = {
    "Cache-Control": "private, no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


@feed_router.get("/calendar/{token}.ics")
def calendar_ics(token: str, request: Request, ctx: ContextDep, session: SessionDep) -> Response:
    """The feed (no cookie: the address is the secret). 404 for an address that does not
    answer, whatever the reason; 304 when the calendar app already holds this version."""
    try:
        feed = calendar_feed.feed(session, token, ctx.now())
    except calendar_feed.NoFeed:
        return Response(status_code=404, headers=FEED_HEADERS)
    return _feed_answer(request, ctx, session, feed)


@feed_router.get("/calendar/{secret}/residents/{patient_id}.ics")
def resident_ics(
    secret: str, patient_id: str, request: Request, ctx: ContextDep, session: SessionDep
) -> Response:
    """One resident's feed for one user (no cookie: the address is the secret). 404 for an
    address that does not answer, whatever the reason: no such secret, the user off or out
    of the organisation, the resident's consent not active, the address reset."""
    try:
        feed = calendar_feed.resident_feed(
            session,
            secret,
            uuid.UUID(patient_id),
            ctx.now(),
            ctx.app.settings.secret_key.get_secret_value(),
        )
    except (ValueError, calendar_feed.NoFeed):
        return Response(status_code=404, headers=FEED_HEADERS)
    return _feed_answer(request, ctx, session, feed)


def _feed_answer(
    request: Request, ctx: ContextDep, session: Session, feed: calendar_feed.Feed
) -> Response:
    headers = {**FEED_HEADERS, "ETag": feed.etag}
    held = [tag.strip() for tag in request.headers.get("if-none-match", "").split(",")]
    if feed.etag in held:
        return Response(status_code=304, headers=headers)
    casework.record_feed_sent(session, feed.user, feed.patient_ids, ctx.now())
    return Response(feed.body, media_type="text/calendar; charset=utf-8", headers=headers)
