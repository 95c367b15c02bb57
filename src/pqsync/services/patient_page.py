"""What a patient's page shows: every stored appointment (deleted ones marked) and a
timeline of syncs and field-level changes, with who or what caused each.

Scoped like the rest of the dashboard: the caller passes a PatientScope from
`Dashboard.patient`, and nothing here is read while the viewer may not see details.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from pqsync.db.provider_names import provider_name_column
from pqsync.db.tables import Appointment, PartnerUser, PatientActivity, Provider, Service, SyncLog
from pqsync.services.dashboard import (
    NOT_UPCOMING,
    ConsentRequired,
    Dashboard,
    PatientScope,
    local_time,
    optional_local_time,
)
from pqsync.services.sync.results import Summary
from pqsync.services.sync.strategies.per_patient import UNKNOWN_TO_INTAKEQ

TIMELINE_LIMIT = 100
FIELD_LABELS = {
    "start_time": "start",
    "end_time": "end",
    "status": "status",
    "intakeq_status": "IntakeQ status",
    "provider_id": "provider",
    "intakeq_practitioner_id": "IntakeQ practitioner",
    "service_id": "service",
    "location_name": "location",
    "deleted_at": "deleted",
    "patient_id": "patient",
}
# Shown to people: only the fields a person knows; internal ones (IntakeQ's ids, its
# last-modified stamp and raw status) stay out.
SHOWN_FIELDS = frozenset(
    ("start_time", "end_time", "status", "provider_id", "service_id", "location_name", "deleted_at")
)


@dataclass(frozen=True)
class AppointmentLine:
    id: uuid.UUID
    start_time: datetime
    end_time: datetime | None
    provider_name: str | None
    service_name: str | None
    status: str
    location_name: str | None
    deleted: bool


@dataclass(frozen=True)
class Appointments:
    upcoming: list[AppointmentLine]
    past: list[AppointmentLine]
    # No-shows and cancellations of the last RECENT_MISSES_DAYS days, newest first: what a
    # case manager acts on, at the top of the page.
    recent_misses: list[AppointmentLine] = field(default_factory=list)


RECENT_MISSES_DAYS = 14
MISSED = ("no_show", "cancelled")


@dataclass(frozen=True)
class FieldChange:
    label: str
    old: str
    new: str


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    who: str
    what: str
    changes: list[FieldChange]
    summary: Summary | None
    # Which appointment ("Nov 15, 2025 at 3:30 PM with Dr. Whitfield"), when one.
    appointment: str | None = None
    # The appointments of an entry that stands for several ("18 appointments added").
    items: list[str] = field(default_factory=list)


def patient_appointments(dashboard: Dashboard, scope: PatientScope) -> Appointments:
    """Upcoming (soonest first) and past (latest first) appointments, deleted ones marked;
    upcoming means not yet started and not cancelled, declined, missed or deleted."""
    if not scope.details_visible:
        raise ConsentRequired("ROI consent required")
    rows = dashboard.session.execute(
        select(Appointment, provider_name_column(), Service.name)
        .outerjoin(Provider, Provider.id == Appointment.provider_id)
        .outerjoin(Service, Service.id == Appointment.service_id)
        .where(Appointment.patient_id == scope.patient.id)
        .order_by(Appointment.start_time, Appointment.pq_appointment_id)
    ).all()
    upcoming: list[AppointmentLine] = []
    past: list[AppointmentLine] = []
    for appointment, provider_name, service_name in rows:
        line = AppointmentLine(
            id=appointment.id,
            start_time=local_time(appointment.start_time, scope.zone),
            end_time=optional_local_time(appointment.end_time, scope.zone),
            provider_name=provider_name,
            service_name=service_name,
            status=appointment.status,
            location_name=appointment.location_name,
            deleted=appointment.deleted_at is not None,
        )
        ahead = appointment.start_time >= dashboard.now
        if ahead and not line.deleted and line.status not in NOT_UPCOMING:
            upcoming.append(line)
        else:
            past.append(line)
    past.reverse()
    since = local_time(dashboard.now - timedelta(days=RECENT_MISSES_DAYS), scope.zone)
    recent = [
        line
        for line in past
        if not line.deleted
        and line.status in MISSED
        and since <= line.start_time
        and line.start_time <= local_time(dashboard.now, scope.zone)
    ]
    return Appointments(upcoming, past, recent)


def timeline(dashboard: Dashboard, scope: PatientScope) -> list[TimelineEntry]:
    """Syncs that covered the patient and, while details are visible, each appointment
    change with the fields that changed; newest first."""
    entries = [
        TimelineEntry(h.synced_at, h.triggered_by, _synced(h.incomplete), [], h.summary)
        for h in dashboard.sync_history(scope).history
    ]
    if scope.details_visible:
        entries.extend(_activity(dashboard, scope))
    entries.sort(key=lambda e: e.at, reverse=True)
    return entries[:TIMELINE_LIMIT]


def _synced(incomplete: tuple[str, ...]) -> str:
    if not incomplete:
        return "Synced from PracticeQ"
    if set(incomplete) == {UNKNOWN_TO_INTAKEQ}:  # nothing to sync: not "synced with gaps"
        return f"Not synced: {UNKNOWN_TO_INTAKEQ}."
    return "Synced from PracticeQ with gaps: " + " ".join(incomplete)


def _activity(dashboard: Dashboard, scope: PatientScope) -> list[TimelineEntry]:
    session = dashboard.session
    rows = session.execute(
        select(PatientActivity, SyncLog, PartnerUser, Appointment, provider_name_column())
        .outerjoin(SyncLog, SyncLog.id == PatientActivity.sync_log_id)
        .outerjoin(PartnerUser, PartnerUser.id == PatientActivity.actor_user_id)
        .outerjoin(Appointment, Appointment.id == PatientActivity.appointment_id)
        .outerjoin(Provider, Provider.id == Appointment.provider_id)
        .where(PatientActivity.patient_id == scope.patient.id)
        .order_by(PatientActivity.created_at.desc())
        .limit(TIMELINE_LIMIT)
    ).all()
    names = _provider_and_service_names(session, [row[0] for row in rows])
    out: list[TimelineEntry] = []
    added: dict[uuid.UUID, list[TimelineEntry]] = {}  # new appointments, by run
    for activity, run, user, appointment, provider_name in rows:
        who = (
            dashboard.trigger_label(run, user)
            if run is not None
            else _actor_label(dashboard, activity, user)
        )
        entry = TimelineEntry(
            at=local_time(activity.created_at, scope.zone),
            who=who,
            # An export says what left pqsync and which range (issue 25).
            what=activity.description
            if activity.activity_type == "record_exported"
            else _headline(activity.activity_type),
            changes=_field_changes(activity.changes, names, scope.zone),
            summary=None,
            appointment=_which(appointment, provider_name, scope.zone),
        )
        if activity.activity_type == "appointment_created" and run is not None:
            added.setdefault(run.id, []).append(entry)
        else:
            out.append(entry)
    for entries in added.values():
        if len(entries) == 1:
            out.extend(entries)
            continue
        # A run that added several (a first sync adds them all) is one entry.
        newest = max(entries, key=lambda e: e.at)
        out.append(
            TimelineEntry(
                at=newest.at,
                who=newest.who,
                what=f"{len(entries)} appointments added",
                changes=[],
                summary=None,
                items=sorted(e.appointment or "an appointment" for e in entries),
            )
        )
    return out


def _which(
    appointment: Appointment | None, provider_name: str | None, zone: ZoneInfo
) -> str | None:
    """The appointment in words a person knows it by: its date, time and provider."""
    if appointment is None:
        return None
    start = local_time(appointment.start_time, zone)
    clock = start.strftime("%I:%M %p").lstrip("0")
    when = f"{start.strftime('%b')} {start.day}, {start.year} at {clock}"
    return f"{when} with {provider_name}" if provider_name else when


def _actor_label(dashboard: Dashboard, activity: PatientActivity, user: PartnerUser | None) -> str:
    if activity.actor == "user":
        stand_in = SyncLog(triggered_by="user")
        return dashboard.trigger_label(stand_in, user)
    stand_in = SyncLog(triggered_by=activity.actor)
    return dashboard.trigger_label(stand_in, None)


HEADLINES = {
    "appointment_created": "New appointment",
    "appointment_updated": "Appointment changed",
    "appointment_restored": "Appointment restored",
    "appointment_deleted": "Appointment deleted in PracticeQ",
    "appointment_provider_linked": "Appointment linked to its provider",
}


def _headline(activity_type: str) -> str:
    return HEADLINES.get(activity_type, activity_type.replace("_", " ").capitalize())


def _provider_and_service_names(
    session: Session, activities: list[PatientActivity]
) -> dict[str, str]:
    ids: set[uuid.UUID] = set()
    for activity in activities:
        for name in ("provider_id", "service_id"):
            change = (activity.changes or {}).get(name)
            for side in ("old", "new"):
                value = change.get(side) if isinstance(change, dict) else None
                try:
                    ids.add(uuid.UUID(str(value)))
                except ValueError:
                    continue
    if not ids:
        return {}
    providers = session.execute(select(Provider.id, Provider.name).where(Provider.id.in_(ids)))
    services = session.execute(select(Service.id, Service.name).where(Service.id.in_(ids)))
    return {str(i): n for i, n in [*providers.tuples(), *services.tuples()]}


def _field_changes(raw: Any, names: dict[str, str], zone: ZoneInfo) -> list[FieldChange]:
    if not isinstance(raw, dict):
        return []
    out = []
    for name, change in raw.items():
        if name not in SHOWN_FIELDS or not isinstance(change, dict):
            continue
        old, new = change.get("old"), change.get("new")
        if name == "deleted_at":
            out.append(
                FieldChange("deleted", "no" if old is None else "yes", "yes" if new else "no")
            )
            continue
        label = FIELD_LABELS.get(name) or str(name)
        if name in ("start_time", "end_time"):
            out.append(_time_change(label, _moment(old, zone), _moment(new, zone)))
        else:
            out.append(FieldChange(label, _shown(old, names), _shown(new, names)))
    return out


def _moment(value: Any, zone: ZoneInfo) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return moment.astimezone(zone) if moment.tzinfo is not None else None


def _time_change(label: str, old: datetime | None, new: datetime | None) -> FieldChange:
    """`2:00 PM -> 3:30 PM` on the same day; with the date when the day changes too."""
    same_day = old is not None and new is not None and old.date() == new.date()

    def text(moment: datetime | None) -> str:
        if moment is None:
            return "none"
        clock = moment.strftime("%I:%M %p").lstrip("0")
        return clock if same_day else f"{moment.strftime('%b')} {moment.day}, {moment.year} {clock}"

    return FieldChange(label, text(old), text(new))


def _shown(value: Any, names: dict[str, str]) -> str:
    if value is None:
        return "none"
    text = str(value)
    return names.get(text, text.replace("_", " "))
