"""A case manager's morning: who needs attention, this week's appointments, and the records
to hand on (a resident's attendance over a date range; the roster), for one organisation.

Scoped like the rest of the dashboard: the caller passes an organisation the viewer may see
(`Dashboard.organization`, or the partner's own), and appointment details come only for
residents whose ROI consent with it is active on the organisation's today (staff: all).
Consent dates themselves are not appointment details: the roster shows them to everyone in
the organisation. Each view is a fixed number of statements, however many residents.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, and_, case, exists, func, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pqsync.db.provider_names import provider_name_column
from pqsync.db.tables import (
    Affiliation,
    Appointment,
    AttentionHandled,
    CaseworkPreferences,
    Organization,
    PartnerUser,
    Patient,
    PatientActivity,
    Provider,
    Service,
    UserSession,
)
from pqsync.domain import visibility
from pqsync.services.access import record_access
from pqsync.services.auth import Principal
from pqsync.services.dashboard import (
    CONSENT_REQUIRED,
    NOT_UPCOMING,
    ConsentView,
    NextAppointment,
    RosterRow,
    local_time,
)

MISSED_DAYS = 14
CONSENT_WARNING_DAYS = 30
# IntakeQ's last change to a cancelled appointment this close to its start: a late one.
LATE_CANCELLATION = timedelta(hours=24)
ATTENTION_SHOWN = 25  # per group; the counts cover them all, the roster's filters the rest
STATUS_LABELS = {
    "no_show": "No-show",
    "cancelled": "Cancelled",
    "declined": "Declined",
    "confirmed": "Confirmed",
    "scheduled": "Awaiting confirmation",
    "unknown": "Status unknown",
}


class NotHandleable(LookupError):
    """No such attention item now (or not the viewer's): nothing was marked."""


def org_zone(org: Organization) -> ZoneInfo:
    return ZoneInfo(org.timezone)


def org_today(org: Organization, now: datetime) -> date:
    return now.astimezone(org_zone(org)).date()


def consent_active_clause(today: date) -> ColumnElement[bool]:
    """SQL for visibility.consent_active on `today` (active and not past its date)."""
    return and_(
        Affiliation.roi_consent_status == "active",
        or_(
            Affiliation.roi_consent_expires_on.is_(None),
            Affiliation.roi_consent_expires_on >= today,
        ),
    )


def details_clause(viewer: Principal, today: date) -> ColumnElement[bool]:
    """Residents whose appointment details the viewer may see (staff: all)."""
    if visibility.is_staff(viewer):
        return and_(True)
    return consent_active_clause(today)


def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone)


def status_label(status: str) -> str:
    return STATUS_LABELS.get(status, status.replace("_", " ").capitalize())


def short_time(moment: datetime) -> str:
    return moment.strftime("%I:%M %p").lstrip("0")


def day_label(day: date) -> str:
    return f"{day.strftime('%a')}, {day.strftime('%b')} {day.day}"


# -- needs attention -------------------------------------------------------------------------


@dataclass(frozen=True)
class AttentionItem:
    kind: str  # missed | late_cancellation | no_upcoming | consent_expiring | consent_expired
    patient_id: uuid.UUID
    patient_name: str
    key: str
    text: str
    handled_by: str | None = None
    handled_at: datetime | None = None


@dataclass(frozen=True)
class AttentionGroup:
    name: str
    heading: str
    items: list[AttentionItem]  # open items, at most ATTENTION_SHOWN
    open_count: int
    kinds: dict[str, int]  # open items by kind

    @property
    def patient_ids(self) -> list[uuid.UUID]:
        return [item.patient_id for item in self.items]


@dataclass(frozen=True)
class Attention:
    groups: list[AttentionGroup]
    handled: list[AttentionItem]  # at most ATTENTION_SHOWN, newest first
    handled_count: int

    @property
    def open_count(self) -> int:
        return sum(group.open_count for group in self.groups)

    @property
    def patient_ids(self) -> list[uuid.UUID]:
        """Whose details the lists show (for the access record)."""
        shown = [pid for group in self.groups for pid in group.patient_ids]
        return shown + [item.patient_id for item in self.handled]


def _attention_items(
    session: Session, viewer: Principal, org: Organization, now: datetime
) -> list[AttentionItem]:
    zone = org_zone(org)
    today = org_today(org, now)
    visible = details_clause(viewer, today)
    items: list[AttentionItem] = []

    recent = session.execute(
        select(
            Appointment.id,
            Appointment.patient_id,
            Appointment.start_time,
            Appointment.status,
            Appointment.intakeq_last_modified,
            Patient.first_name,
            Patient.last_name,
            provider_name_column(),
        )
        .join(Affiliation, Affiliation.patient_id == Appointment.patient_id)
        .join(Patient, Patient.id == Appointment.patient_id)
        .outerjoin(Provider, Provider.id == Appointment.provider_id)
        .where(
            Affiliation.organization_id == org.id,
            visible,
            Appointment.deleted_at.is_(None),
            Appointment.start_time >= now - timedelta(days=MISSED_DAYS),
            Appointment.start_time <= now,
            Appointment.status.in_(("no_show", "cancelled")),
        )
        .order_by(Appointment.start_time.desc(), Appointment.id)
    ).all()
    for appt_id, patient_id, start, status, modified, first, last, provider in recent:
        late = (
            status == "cancelled" and modified is not None and modified >= start - LATE_CANCELLATION
        )
        if status == "cancelled" and not late:
            continue
        what = "Missed" if status == "no_show" else "Cancelled late"
        with_whom = f" with {provider}" if provider else ""
        when = local_time(start, zone)
        items.append(
            AttentionItem(
                kind="missed" if status == "no_show" else "late_cancellation",
                patient_id=patient_id,
                patient_name=f"{first} {last}".strip(),
                key=f"appointment:{appt_id}",
                text=f"{what}: {day_label(when.date())} at {short_time(when)}{with_whom}",
            )
        )

    upcoming = exists().where(
        Appointment.patient_id == Affiliation.patient_id,
        Appointment.deleted_at.is_(None),
        Appointment.start_time >= now,
        Appointment.status.not_in(NOT_UPCOMING),
    )
    latest = (
        select(func.max(Appointment.start_time))
        .where(Appointment.patient_id == Affiliation.patient_id, Appointment.deleted_at.is_(None))
        .scalar_subquery()
    )
    for patient_id, first, last, latest_start in session.execute(
        select(Affiliation.patient_id, Patient.first_name, Patient.last_name, latest)
        .join(Patient, Patient.id == Affiliation.patient_id)
        .where(Affiliation.organization_id == org.id, visible, ~upcoming)
        .order_by(Patient.last_name, Patient.first_name, Patient.id)
    ):
        # Keyed by the newest appointment: a resident who is booked again and later runs
        # out of appointments again needs attention again.
        stamp = latest_start.isoformat() if latest_start is not None else "none"
        items.append(
            AttentionItem(
                kind="no_upcoming",
                patient_id=patient_id,
                patient_name=f"{first} {last}".strip(),
                key=f"no_upcoming:{stamp}",
                text="No upcoming appointment",
            )
        )

    for patient_id, first, last, status, expires in session.execute(
        select(
            Affiliation.patient_id,
            Patient.first_name,
            Patient.last_name,
            Affiliation.roi_consent_status,
            Affiliation.roi_consent_expires_on,
        )
        .join(Patient, Patient.id == Affiliation.patient_id)
        .where(
            Affiliation.organization_id == org.id,
            or_(
                and_(
                    Affiliation.roi_consent_status == "active",
                    Affiliation.roi_consent_expires_on.is_not(None),
                    Affiliation.roi_consent_expires_on <= today + timedelta(CONSENT_WARNING_DAYS),
                ),
                Affiliation.roi_consent_status == "expired",
            ),
        )
        .order_by(Affiliation.roi_consent_expires_on, Patient.last_name, Patient.id)
    ):
        expired = visibility.consent_state(status, expires, today) == "expired"
        on = f" on {expires.strftime('%b')} {expires.day}, {expires.year}" if expires else ""
        items.append(
            AttentionItem(
                kind="consent_expired" if expired else "consent_expiring",
                patient_id=patient_id,
                patient_name=f"{first} {last}".strip(),
                key=f"consent:{expires.isoformat() if expires else 'none'}",
                text=f"ROI consent expired{on}" if expired else f"ROI consent expires{on}",
            )
        )
    return items


def attention(session: Session, viewer: Principal, org: Organization, now: datetime) -> Attention:
    """What needs a case manager's attention in the organisation, handled items apart."""
    items = _attention_items(session, viewer, org, now)
    marks = {
        (mark.patient_id, mark.item_key): mark
        for mark in session.scalars(
            select(AttentionHandled).where(AttentionHandled.organization_id == org.id)
        )
    }
    zone = org_zone(org)
    open_items: list[AttentionItem] = []
    handled: list[AttentionItem] = []
    for item in items:
        mark = marks.get((item.patient_id, item.key))
        if mark is None:
            open_items.append(item)
        else:
            handled.append(
                AttentionItem(
                    **{
                        **item.__dict__,
                        "handled_by": mark.handled_by_name,
                        "handled_at": local_time(mark.handled_at, zone),
                    }
                )
            )
    handled.sort(key=lambda item: item.handled_at or now, reverse=True)
    groups = []
    for name, heading, kinds in (
        ("missed", "Missed or cancelled late (last 14 days)", ("missed", "late_cancellation")),
        ("no_upcoming", "No upcoming appointment", ("no_upcoming",)),
        ("consent", "ROI consent expiring or expired", ("consent_expiring", "consent_expired")),
    ):
        group = [item for item in open_items if item.kind in kinds]
        by_kind = {kind: sum(item.kind == kind for item in group) for kind in kinds}
        groups.append(AttentionGroup(name, heading, group[:ATTENTION_SHOWN], len(group), by_kind))
    return Attention(groups, handled[:ATTENTION_SHOWN], len(handled))


def mark_handled(
    session: Session,
    viewer: Principal,
    org: Organization,
    patient_id: uuid.UUID,
    key: str,
    now: datetime,
) -> None:
    """Mark one current attention item handled by the viewer; it stays handled. Marking an
    item twice keeps the first mark."""
    current = {(item.patient_id, item.key) for item in _attention_items(session, viewer, org, now)}
    if (patient_id, key) not in current:
        raise NotHandleable("no such item")
    session.add(
        AttentionHandled(
            organization_id=org.id,
            patient_id=patient_id,
            item_key=key,
            handled_by_user_id=viewer.user_id,
            handled_by_name=viewer.name,
            handled_at=now,
        )
    )
    try:
        session.commit()
    except IntegrityError:
        session.rollback()


# -- this week -------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeekEntry:
    patient_id: uuid.UUID
    patient_name: str
    start: datetime
    end: datetime | None
    time: str
    provider: str
    service: str
    location: str
    status: str
    status_label: str


@dataclass(frozen=True)
class WeekDay:
    day: date
    label: str
    entries: list[WeekEntry]


@dataclass(frozen=True)
class Week:
    start: date
    days: list[WeekDay]
    previous: date
    next: date
    label: str
    count: int


def week_start(day: date) -> date:
    return day - timedelta(days=day.weekday())


def week(
    session: Session,
    viewer: Principal,
    org: Organization,
    now: datetime,
    of: date | None = None,
) -> Week:
    """Consenting residents' appointments (deleted ones left out) Monday to Sunday in the
    organisation's zone, by day."""
    zone = org_zone(org)
    today = org_today(org, now)
    monday = week_start(of or today)
    begin = local_midnight(monday, zone)
    end = local_midnight(monday + timedelta(days=7), zone)
    rows = session.execute(
        select(
            Appointment.patient_id,
            Patient.first_name,
            Patient.last_name,
            Appointment.start_time,
            Appointment.end_time,
            Appointment.status,
            Appointment.location_name,
            provider_name_column(),
            Service.name,
        )
        .join(Affiliation, Affiliation.patient_id == Appointment.patient_id)
        .join(Patient, Patient.id == Appointment.patient_id)
        .outerjoin(Provider, Provider.id == Appointment.provider_id)
        .outerjoin(Service, Service.id == Appointment.service_id)
        .where(
            Affiliation.organization_id == org.id,
            details_clause(viewer, today),
            Appointment.deleted_at.is_(None),
            Appointment.start_time >= begin,
            Appointment.start_time < end,
        )
        .order_by(Appointment.start_time, Patient.last_name, Patient.first_name, Appointment.id)
    ).all()
    by_day: dict[date, list[WeekEntry]] = {monday + timedelta(days=n): [] for n in range(7)}
    for patient_id, first, last, start, finish, status, location, provider, service in rows:
        local = local_time(start, zone)
        by_day.setdefault(local.date(), []).append(
            WeekEntry(
                patient_id=patient_id,
                patient_name=f"{first} {last}".strip(),
                start=local,
                end=local_time(finish, zone) if finish else None,
                time=short_time(local),
                provider=provider or "Provider not yet known",
                service=service or "—",
                location=location or "—",
                status=status,
                status_label=status_label(status),
            )
        )
    sunday = monday + timedelta(days=6)
    label = f"{day_label(monday)} to {day_label(sunday)}, {sunday.year}"
    return Week(
        start=monday,
        days=[WeekDay(day, day_label(day), entries) for day, entries in sorted(by_day.items())],
        previous=monday - timedelta(days=7),
        next=monday + timedelta(days=7),
        label=label,
        count=len(rows),
    )


# -- records to hand on ----------------------------------------------------------------------


@dataclass(frozen=True)
class AttendanceLine:
    start: datetime
    date: str
    time: str
    provider: str
    service: str
    location: str
    outcome: str  # Kept | Missed | Cancelled | Upcoming | Status unknown


@dataclass(frozen=True)
class AttendanceRecord:
    patient_id: uuid.UUID
    patient_name: str
    organization_name: str
    first_day: date
    last_day: date
    zone_name: str
    lines: list[AttendanceLine]

    def count(self, outcome: str) -> int:
        return sum(line.outcome == outcome for line in self.lines)

    @property
    def range_text(self) -> str:
        return f"{self.first_day.isoformat()} to {self.last_day.isoformat()}"


def outcome(status: str, start: datetime, now: datetime) -> str:
    """What became of an appointment, as far as PracticeQ says: a past confirmed or booked
    appointment not marked missed counts as kept."""
    if status == "no_show":
        return "Missed"
    if status in ("cancelled", "declined"):
        return "Cancelled"
    if status == "unknown":
        return "Status unknown"
    return "Kept" if start <= now else "Upcoming"


def attendance(
    session: Session,
    org: Organization,
    patient: Patient,
    first_day: date,
    last_day: date,
    now: datetime,
) -> AttendanceRecord:
    """One resident's appointments from `first_day` to `last_day` (the organisation's days,
    inclusive), deleted ones left out. The caller has checked that details are visible."""
    zone = org_zone(org)
    rows = session.execute(
        select(
            Appointment.start_time,
            Appointment.status,
            Appointment.location_name,
            provider_name_column(),
            Service.name,
        )
        .outerjoin(Provider, Provider.id == Appointment.provider_id)
        .outerjoin(Service, Service.id == Appointment.service_id)
        .where(
            Appointment.patient_id == patient.id,
            Appointment.deleted_at.is_(None),
            Appointment.start_time >= local_midnight(first_day, zone),
            Appointment.start_time < local_midnight(last_day + timedelta(days=1), zone),
        )
        .order_by(Appointment.start_time, Appointment.id)
    ).all()
    lines = []
    for start, status, location, provider, service in rows:
        local = local_time(start, zone)
        lines.append(
            AttendanceLine(
                start=local,
                date=local.date().isoformat(),
                time=short_time(local),
                provider=provider or "Provider not yet known",
                service=service or "—",
                location=location or "—",
                outcome=outcome(status, start, now),
            )
        )
    return AttendanceRecord(
        patient.id, patient.full_name, org.name, first_day, last_day, org.timezone, lines
    )


@dataclass(frozen=True)
class RosterExportRow:
    patient_id: uuid.UUID
    name: str
    consent: str
    provider: str
    next_appointment: str
    last_synced: str


def roster_export(
    session: Session, viewer: Principal, org: Organization, now: datetime
) -> list[RosterExportRow]:
    """Every resident of the organisation, by name: consent, and for those whose details the
    viewer may see, the next appointment and its provider; when last synced. Two statements."""
    zone = org_zone(org)
    today = org_today(org, now)
    rows = session.execute(
        select(
            Affiliation.patient_id,
            Patient.first_name,
            Patient.last_name,
            Affiliation.roi_consent_status,
            Affiliation.roi_consent_expires_on,
            Affiliation.last_practiceq_sync_at,
        )
        .join(Patient, Patient.id == Affiliation.patient_id)
        .where(Affiliation.organization_id == org.id)
        .order_by(Patient.last_name, Patient.first_name, Patient.id)
    ).all()
    upcoming = next_appointments(session, org.id, now, details_clause(viewer, today))
    out = []
    for patient_id, first, last, status, expires, synced in rows:
        active = visibility.consent_active(status, expires, today)
        state = visibility.consent_state(status, expires, today)
        consent = f"{state}" + (f" (until {expires.isoformat()})" if expires else "")
        shown = visibility.details_visible(viewer, active)
        nxt = upcoming.get(patient_id) if shown else None
        out.append(
            RosterExportRow(
                patient_id=patient_id,
                name=f"{first} {last}".strip(),
                consent=consent,
                provider=(nxt[1] or "") if nxt else "",
                next_appointment=(
                    local_time(nxt[0], zone).strftime("%Y-%m-%d %H:%M")
                    if nxt
                    else ("" if shown else "ROI consent required")
                ),
                last_synced=local_time(synced, zone).strftime("%Y-%m-%d %H:%M") if synced else "",
            )
        )
    return out


def next_appointments(
    session: Session, organization_id: uuid.UUID, now: datetime, visible: ColumnElement[bool]
) -> dict[uuid.UUID, tuple[datetime, str | None, str]]:
    """Each visible resident's next appointment (start, provider, status), one statement."""
    upcoming = and_(
        Appointment.deleted_at.is_(None),
        Appointment.start_time >= now,
        Appointment.status.not_in(NOT_UPCOMING),
    )
    first = (
        select(Appointment.patient_id, func.min(Appointment.start_time).label("start_time"))
        .join(Affiliation, Affiliation.patient_id == Appointment.patient_id)
        .where(upcoming, Affiliation.organization_id == organization_id, visible)
        .group_by(Appointment.patient_id)
        .subquery()
    )
    found: dict[uuid.UUID, tuple[datetime, str | None, str]] = {}
    for patient_id, start, provider, status in session.execute(
        select(
            Appointment.patient_id,
            Appointment.start_time,
            provider_name_column(),
            Appointment.status,
        )
        .join(
            first,
            and_(
                first.c.patient_id == Appointment.patient_id,
                first.c.start_time == Appointment.start_time,
            ),
        )
        .outerjoin(Provider, Provider.id == Appointment.provider_id)
        .where(upcoming)
        .order_by(Appointment.pq_appointment_id)
    ):
        found.setdefault(patient_id, (start, provider, status))
    return found


def csv_cell(value: str) -> str:
    """A CSV cell a spreadsheet will not run as a formula."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def csv_text(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([csv_cell(cell) for cell in row])
    return buffer.getvalue()


# -- the history of exports ------------------------------------------------------------------

EXPORT_ACTIVITY = "record_exported"
FEED_DETAIL = "Upcoming appointments sent to the calendar feed"


def record_export(
    session: Session,
    *,
    user: Principal | PartnerUser,
    view: str,
    patient_ids: Iterable[uuid.UUID],
    detail: str,
    now: datetime,
) -> None:
    """Before an export leaves: the access record (services/access.py) and one entry in each
    resident's history on their page (one statement each however many residents): who
    exported what, when, which range."""
    ids = list(dict.fromkeys(patient_ids))
    if not ids:
        return
    record_access(session, user=user, view=view, patient_ids=ids, detail=detail, now=now)
    user_id = user.user_id if isinstance(user, Principal) else user.id
    session.execute(
        insert(PatientActivity),
        [
            {
                "id": uuid.uuid4(),
                "patient_id": patient_id,
                "activity_type": EXPORT_ACTIVITY,
                "description": detail,
                "changes": {},
                "actor": "user",
                "actor_user_id": user_id,
                "created_at": now,
            }
            for patient_id in ids
        ],
    )
    session.commit()


def record_shown(
    session: Session, user: Principal, view: str, patient_ids: Iterable[uuid.UUID], now: datetime
) -> None:
    """A read of these residents' appointment details on a page (the access record only)."""
    record_access(session, user=user, view=view, patient_ids=patient_ids, now=now)


def record_feed_sent(
    session: Session, user: PartnerUser, patient_ids: Iterable[uuid.UUID], now: datetime
) -> None:
    """A calendar app polls every few minutes: the feed is written to each resident's
    history once a day per user (the first time that day it holds the resident)."""
    since = now - timedelta(days=1)
    already = set(
        session.scalars(
            select(PatientActivity.patient_id).where(
                PatientActivity.actor_user_id == user.id,
                PatientActivity.activity_type == EXPORT_ACTIVITY,
                PatientActivity.description == FEED_DETAIL,
                PatientActivity.created_at > since,
            )
        )
    )
    record_export(
        session,
        user=user,
        view="calendar_feed",
        patient_ids=[pid for pid in patient_ids if pid not in already],
        detail=FEED_DETAIL,
        now=now,
    )


# -- roster filters and sort -----------------------------------------------------------------

ROSTER_FILTERS = {
    "all": "Everyone",
    "this_week": "Appointment this week",
    "no_upcoming": "No upcoming appointment",
    "missed": "Missed recently (14 days)",
    "consent_expiring": "ROI consent expiring or expired",
}
ROSTER_SORTS = {
    "name": "Name",
    "next": "Next appointment",
    "synced": "Last synced (oldest first)",
}
FILTERED_PAGE = 50


@dataclass(frozen=True)
class FilteredRoster:
    rows: list[RosterRow]
    page: int
    more: bool


def filtered_roster(
    session: Session,
    viewer: Principal,
    org: Organization,
    now: datetime,
    *,
    show: str = "all",
    sort: str = "name",
    page: int = 1,
) -> FilteredRoster:
    """The roster narrowed to one kind of resident and ordered as asked, a page at a time
    (three statements). Filters that need appointment details match only residents whose
    details the viewer may see; sorting by next appointment puts the others last."""
    zone = org_zone(org)
    today = org_today(org, now)
    visible = details_clause(viewer, today)
    upcoming = and_(
        Appointment.patient_id == Affiliation.patient_id,
        Appointment.deleted_at.is_(None),
        Appointment.start_time >= now,
        Appointment.status.not_in(NOT_UPCOMING),
    )
    next_start = select(func.min(Appointment.start_time)).where(upcoming).scalar_subquery()
    monday = week_start(today)
    conditions: list[ColumnElement[bool]] = [Affiliation.organization_id == org.id]
    if show == "this_week":
        conditions += [
            visible,
            exists().where(
                Appointment.patient_id == Affiliation.patient_id,
                Appointment.deleted_at.is_(None),
                Appointment.start_time >= local_midnight(monday, zone),
                Appointment.start_time < local_midnight(monday + timedelta(days=7), zone),
            ),
        ]
    elif show == "no_upcoming":
        conditions += [visible, ~exists().where(upcoming)]
    elif show == "missed":
        conditions += [
            visible,
            exists().where(
                Appointment.patient_id == Affiliation.patient_id,
                Appointment.deleted_at.is_(None),
                Appointment.status == "no_show",
                Appointment.start_time >= now - timedelta(days=MISSED_DAYS),
                Appointment.start_time <= now,
            ),
        ]
    elif show == "consent_expiring":
        conditions.append(
            or_(
                and_(
                    Affiliation.roi_consent_status == "active",
                    Affiliation.roi_consent_expires_on.is_not(None),
                    Affiliation.roi_consent_expires_on <= today + timedelta(CONSENT_WARNING_DAYS),
                ),
                Affiliation.roi_consent_status == "expired",
            )
        )
    names = (Patient.last_name, Patient.first_name, Patient.id)
    shown_next = case((visible, next_start), else_=None)
    order: tuple[Any, ...]
    if sort == "next":
        order = (shown_next.is_(None), shown_next, *names)
    elif sort == "synced":
        last_sync = Affiliation.last_practiceq_sync_at
        order = (last_sync.is_not(None), last_sync, *names)
    else:
        order = names
    page = max(1, page)
    rows = session.execute(
        select(
            Patient.id,
            Patient.first_name,
            Patient.last_name,
            Affiliation.roi_consent_status,
            Affiliation.roi_consent_expires_on,
            Affiliation.last_practiceq_sync_at,
        )
        .select_from(Affiliation)
        .join(Patient, Patient.id == Affiliation.patient_id)
        .where(*conditions)
        .order_by(*order)
        .limit(FILTERED_PAGE + 1)
        .offset((page - 1) * FILTERED_PAGE)
    ).all()
    more = len(rows) > FILTERED_PAGE
    rows = rows[:FILTERED_PAGE]
    ids = [row[0] for row in rows]
    upcoming_of = next_appointments(
        session, org.id, now, and_(visible, Affiliation.patient_id.in_(ids))
    )
    out = []
    for patient_id, first, last, status, expires, synced in rows:
        active = visibility.consent_active(status, expires, today)
        found = upcoming_of.get(patient_id) if visibility.details_visible(viewer, active) else None
        out.append(
            RosterRow(
                id=patient_id,
                name=f"{first} {last}".strip(),
                organization_id=org.id,
                organization_name=org.name,
                roi_consent=ConsentView(
                    status=status,
                    expires_on=expires,
                    active=active,
                    message=None if active else CONSENT_REQUIRED,
                ),
                next_appointment=NextAppointment(local_time(found[0], zone), found[1], found[2])
                if found
                else None,
                last_synced_at=local_time(synced, zone) if synced else None,
            )
        )
    return FilteredRoster(out, page, more)


# -- since your last visit -------------------------------------------------------------------

CHANGES_SCAN = 500
CHANGES_SHOWN = 25
CHANGE_LABELS = {
    "new": "New",
    "rescheduled": "Rescheduled",
    "cancelled": "Cancelled",
    "missed": "Missed",
}


@dataclass(frozen=True)
class ChangeItem:
    kind: str  # new | rescheduled | cancelled | missed
    label: str
    patient_id: uuid.UUID
    patient_name: str
    when: str  # the appointment's (new) time


@dataclass(frozen=True)
class SinceLastVisit:
    since: datetime
    counts: dict[str, int]
    items: list[ChangeItem]
    at_least: bool  # more changes than were read: the counts are lower bounds

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def patient_ids(self) -> list[uuid.UUID]:
        return [item.patient_id for item in self.items]


def _change_kind(activity_type: str, changes: Any) -> str | None:
    if activity_type == "appointment_created":
        return "new"
    if activity_type != "appointment_updated" or not isinstance(changes, dict):
        return None
    status = changes.get("status")
    new_status = status.get("new") if isinstance(status, dict) else None
    if new_status == "no_show":
        return "missed"
    if new_status in ("cancelled", "declined"):
        return "cancelled"
    if "start_time" in changes:
        return "rescheduled"
    return None


def previous_sign_in(
    session: Session, user_id: uuid.UUID, current_session: uuid.UUID | None
) -> datetime | None:
    """When the user signed in before this session (None: this is the first time)."""
    query = select(func.max(UserSession.created_at)).where(UserSession.user_id == user_id)
    if current_session is not None:
        current = (
            select(UserSession.created_at)
            .where(UserSession.id == current_session)
            .scalar_subquery()
        )
        query = query.where(UserSession.id != current_session, UserSession.created_at <= current)
    return session.scalar(query)


def since_last_visit(
    session: Session, viewer: Principal, org: Organization, now: datetime
) -> SinceLastVisit | None:
    """New, rescheduled, cancelled and missed appointments of the organisation's consenting
    residents since the viewer's previous sign-in (or since they dismissed the list, if
    later). None on a first visit. Three statements."""
    previous = previous_sign_in(session, viewer.user_id, viewer.session_id)
    if previous is None:
        return None
    prefs = session.get(CaseworkPreferences, viewer.user_id)
    since = previous
    if prefs is not None and prefs.changes_dismissed_at is not None:
        since = max(since, prefs.changes_dismissed_at)
    zone = org_zone(org)
    rows = session.execute(
        select(
            PatientActivity.activity_type,
            PatientActivity.changes,
            PatientActivity.patient_id,
            Patient.first_name,
            Patient.last_name,
            Appointment.start_time,
        )
        .join(Affiliation, Affiliation.patient_id == PatientActivity.patient_id)
        .join(Patient, Patient.id == PatientActivity.patient_id)
        .join(Appointment, Appointment.id == PatientActivity.appointment_id)
        .where(
            Affiliation.organization_id == org.id,
            details_clause(viewer, org_today(org, now)),
            PatientActivity.created_at > since,
            PatientActivity.activity_type.in_(("appointment_created", "appointment_updated")),
        )
        .order_by(PatientActivity.created_at.desc(), PatientActivity.id)
        .limit(CHANGES_SCAN + 1)
    ).all()
    at_least = len(rows) > CHANGES_SCAN
    counts = dict.fromkeys(CHANGE_LABELS, 0)
    items: list[ChangeItem] = []
    for activity_type, changes, patient_id, first, last, start in rows[:CHANGES_SCAN]:
        kind = _change_kind(activity_type, changes)
        if kind is None:
            continue
        counts[kind] += 1
        if len(items) < CHANGES_SHOWN:
            local = local_time(start, zone)
            items.append(
                ChangeItem(
                    kind=kind,
                    label=CHANGE_LABELS[kind],
                    patient_id=patient_id,
                    patient_name=f"{first} {last}".strip(),
                    when=f"{day_label(local.date())} at {short_time(local)}",
                )
            )
    return SinceLastVisit(local_time(since, zone), counts, items, at_least)


def dismiss_changes(session: Session, user_id: uuid.UUID, now: datetime) -> None:
    """The list starts again from now (until the next sign-in brings a later start)."""
    prefs = session.get(CaseworkPreferences, user_id)
    if prefs is None:
        session.add(CaseworkPreferences(user_id=user_id, changes_dismissed_at=now))
    else:
        prefs.changes_dismissed_at = now
    session.commit()
