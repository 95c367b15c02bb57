"""What the clinic's staff pages read: sync runs (filtered), one run's detail, and the
IntakeQ request budget's use today."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from pqsync.db.tables import Alert, Organization, PartnerUser, Patient, SyncLog, Verification
from pqsync.domain.run_types import RUN_TYPES
from pqsync.domain.visibility import TRIGGER_LABELS

RUN_STATUSES = ("running", "success", "partial", "failed", "paused")
RUNS_SHOWN = 100


class StaffInputError(ValueError):
    """A filter value the staff pages do not know (the message says which)."""


# The days a run filter may name: a day's bounds are computed in a zone, and 9999-12-31's
# next midnight does not exist.
FIRST_DAY = date(2000, 1, 1)
LAST_DAY = date(2199, 12, 31)


@dataclass(frozen=True)
class RunFilters:
    organization_id: uuid.UUID | None = None
    run_type: str | None = None
    status: str | None = None
    day: date | None = None

    @classmethod
    def parse(
        cls, organization: str | None, run_type: str | None, status: str | None, day: str | None
    ) -> RunFilters:
        """From the form's text fields; empty means any."""
        try:
            org_id = uuid.UUID(organization) if organization else None
        except ValueError:
            raise StaffInputError("unknown organisation") from None
        if run_type and run_type not in RUN_TYPES:
            raise StaffInputError(f"type must be one of {', '.join(RUN_TYPES)}")
        if status and status not in RUN_STATUSES:
            raise StaffInputError(f"status must be one of {', '.join(RUN_STATUSES)}")
        try:
            parsed_day = date.fromisoformat(day) if day else None
        except ValueError:
            raise StaffInputError("the date must be YYYY-MM-DD") from None
        if parsed_day is not None and not FIRST_DAY <= parsed_day <= LAST_DAY:
            raise StaffInputError(
                f"the date must be between {FIRST_DAY.isoformat()} and {LAST_DAY.isoformat()}"
            )
        return cls(org_id, run_type or None, status or None, parsed_day)


@dataclass(frozen=True)
class RunLine:
    id: uuid.UUID
    sync_type: str  # the scope: patient | organization | nightly
    run_type: str | None  # manual_patient | manual_org | automated_daily | webhook
    status: str
    organization_name: str | None
    triggered_by: str
    started_at: datetime
    finished_at: datetime | None
    new: int
    updated: int
    unchanged: int
    deleted: int
    errors: int
    requests: int
    error: str | None


@dataclass(frozen=True)
class UnknownClient:
    """An IntakeQ client no directory patient matches, and how many of its appointments the
    run skipped (by ClientId: the run stores no names of people outside the directory)."""

    client_id: str
    appointments: int
    appointment_ids: list[str]  # those listed by the run (at most 200 across clients)


@dataclass(frozen=True)
class UnknownClients:
    clients: list[UnknownClient]  # most appointments first
    appointments: int  # every skipped appointment of an unknown client
    unnamed: int  # of them, ones whose client IntakeQ did not identify (or past the list)

    @property
    def count(self) -> int:
        return len(self.clients)


@dataclass(frozen=True)
class RunDetail:
    run: RunLine
    date_range: tuple[date | None, date | None]
    error: str | None
    plan: str | None
    patients: list[tuple[str, str, str | None]]  # name, state, error
    patient_ids: list[uuid.UUID]  # whose names `patients` shows (for the access record)
    unknown_clients: UnknownClients
    unmatched_practitioners: list[tuple[str, int]]
    warnings: list[str] = field(default_factory=list)
    # Why a partial run is partial, in words a person can act on.
    incomplete: list[str] = field(default_factory=list)


def _who(run: SyncLog, user: PartnerUser | None) -> str:
    if run.triggered_by == "user":
        return user.name if user is not None else "a removed user"
    return TRIGGER_LABELS.get(run.triggered_by, run.triggered_by)


def _line(
    run: SyncLog, org: Organization | None, user: PartnerUser | None, zone: ZoneInfo
) -> RunLine:
    return RunLine(
        id=run.id,
        sync_type=run.sync_type,
        run_type=run.run_type if run.run_type in RUN_TYPES else None,
        status=run.status,
        organization_name=org.name if org is not None else None,
        triggered_by=_who(run, user),
        started_at=run.started_at.astimezone(zone),
        finished_at=run.finished_at.astimezone(zone) if run.finished_at else None,
        new=run.appointments_new,
        updated=run.appointments_updated,
        unchanged=run.appointments_unchanged,
        deleted=run.appointments_deleted,
        errors=run.appointments_errors,
        requests=run.requests_made,
        error=run.error_message,
    )


def sync_runs(
    session: Session, filters: RunFilters, zone: ZoneInfo, *, limit: int = RUNS_SHOWN
) -> list[RunLine]:
    """The newest runs matching the filters (a day is a day in `zone`), for the staff."""
    query = (
        select(SyncLog, Organization, PartnerUser)
        .outerjoin(Organization, Organization.id == SyncLog.organization_id)
        .outerjoin(PartnerUser, PartnerUser.id == SyncLog.triggered_by_user_id)
        .order_by(SyncLog.started_at.desc())
        .limit(limit)
    )
    if filters.organization_id is not None:
        query = query.where(SyncLog.organization_id == filters.organization_id)
    if filters.run_type is not None:
        query = query.where(SyncLog.run_type == filters.run_type)
    if filters.status is not None:
        query = query.where(SyncLog.status == filters.status)
    if filters.day is not None:
        start = datetime.combine(filters.day, time(), zone)
        end = datetime.combine(filters.day + timedelta(days=1), time(), zone)
        query = query.where(SyncLog.started_at >= start, SyncLog.started_at < end)
    return [_line(run, org, user, zone) for run, org, user in session.execute(query).all()]


def _strings(raw: Any) -> list[str]:
    if isinstance(raw, list):
        return [str(item) for item in raw]
    if isinstance(raw, Mapping):
        return [str(key) for key in raw]
    return []


def _int(raw: Any) -> int:
    return raw if isinstance(raw, int) and not isinstance(raw, bool) else 0


def unknown_clients(details: Mapping[str, Any]) -> UnknownClients:
    """A run's skipped appointments grouped by IntakeQ client. Runs stored before the
    per-client counts were kept are grouped from their listed appointments."""
    total = _int(details.get("unknown_clients"))  # appointments, despite the stored name
    listed: dict[str, list[str]] = {}
    for raw in details.get("unknown_appointments") or []:
        if isinstance(raw, Mapping) and raw.get("clientId") is not None:
            ids = listed.setdefault(str(raw["clientId"]), [])
            ids.append(str(raw.get("appointmentId", "")))
    raw_counts = details.get("unknown_by_client")
    if isinstance(raw_counts, Mapping):
        counts = {str(k): _int(v) for k, v in raw_counts.items() if _int(v) > 0}
    else:
        counts = {client: len(ids) for client, ids in listed.items()}
    clients = sorted(
        (UnknownClient(client, n, listed.get(client, [])) for client, n in counts.items()),
        key=lambda c: (-c.appointments, c.client_id),
    )
    named = sum(c.appointments for c in clients)
    return UnknownClients(clients, max(total, named), max(0, total - named))


def run_detail(session: Session, run_id: str, zone: ZoneInfo) -> RunDetail | None:
    """One run with its counts, errors, unknown patients and unmatched practitioners."""
    try:
        key = uuid.UUID(run_id)
    except ValueError:
        return None
    found = session.execute(
        select(SyncLog, Organization, PartnerUser)
        .outerjoin(Organization, Organization.id == SyncLog.organization_id)
        .outerjoin(PartnerUser, PartnerUser.id == SyncLog.triggered_by_user_id)
        .where(SyncLog.id == key)
    ).first()
    if found is None:
        return None
    run, org, user = found
    details: Mapping[str, Any] = run.details or {}
    raw_patients = details.get("patients")
    states: dict[uuid.UUID, Mapping[str, Any]] = {}
    for patient_key, entry in raw_patients.items() if isinstance(raw_patients, Mapping) else ():
        try:
            states[uuid.UUID(str(patient_key))] = entry if isinstance(entry, Mapping) else {}
        except ValueError:
            continue
    names = {
        p.id: p.full_name
        for p in session.scalars(select(Patient).where(Patient.id.in_(list(states))))
    }
    patients = sorted(
        (
            (
                names.get(pid, "a removed patient"),
                "done, incomplete" if e.get("incomplete") else str(e.get("state", "")),
                e.get("error") or "; ".join(_strings(e.get("incomplete"))),
            )
            for pid, e in states.items()
        ),
        key=lambda p: p[0],
    )
    unmatched = details.get("unmatched_practitioners")
    plan = details.get("plan")
    return RunDetail(
        run=_line(run, org, user, zone),
        date_range=(run.date_range_start, run.date_range_end),
        error=run.error_message,
        plan=str(plan) if plan else None,
        patients=[(n, s, str(e) if e else None) for n, s, e in patients],
        patient_ids=[pid for pid in states if pid in names],
        unknown_clients=unknown_clients(details),
        unmatched_practitioners=sorted(
            (str(k), int(v)) for k, v in unmatched.items() if isinstance(v, int)
        )
        if isinstance(unmatched, Mapping)
        else [],
        warnings=_strings(details.get("warnings"))[:50],
        incomplete=_strings(details.get("incomplete"))[:50],
    )


ALERTS_SHOWN = 10


@dataclass(frozen=True)
class AlertLine:
    created_at: datetime  # in the staff's zone
    subject: str
    delivery: str  # email | log | retrying | failed | cancelled
    run_id: uuid.UUID | None
    attempts: int = 0


def newest_alerts(session: Session, limit: int) -> list[Alert]:
    """The newest alerts raised (failure streaks, recoveries, missed nights), newest first."""
    return list(session.scalars(select(Alert).order_by(Alert.created_at.desc()).limit(limit)))


def recent_alerts(session: Session, zone: ZoneInfo) -> list[AlertLine]:
    """The newest alerts raised, however they were delivered: without SMTP this page is
    where they are read."""
    return [
        AlertLine(a.created_at.astimezone(zone), a.subject, a.delivery, a.run_id, a.attempts)
        for a in newest_alerts(session, ALERTS_SHOWN)
    ]


@dataclass(frozen=True)
class DiscrepancyLine:
    kind: str  # missing | extra | stale
    appointment_id: str  # IntakeQ's
    patient_id: str | None
    reason: str
    fields: list[str]  # "status: scheduled -> cancelled", or a field's name alone


@dataclass(frozen=True)
class AccuracyView:
    """The newest verification that measured something, and a newer one that could not."""

    percent: float
    compared: int
    measured_at: datetime  # in the staff's zone
    scope: str  # the organisation's name, or "all organisations"
    missing: int
    extra: int
    stale: int
    discrepancies: list[DiscrepancyLine]
    not_measured: str | None = None  # "skipped: not enough of today's requests..."


def _discrepancy_line(raw: Mapping[str, Any]) -> DiscrepancyLine:
    raw_fields = raw.get("fields")
    fields: Mapping[str, Any] = raw_fields if isinstance(raw_fields, Mapping) else {}
    described = []
    for name, values in sorted(fields.items()):
        if isinstance(values, Mapping) and values:
            described.append(f"{name}: {values.get('stored')} -> {values.get('intakeq')}")
        else:
            described.append(str(name))
    patient = raw.get("patientId")
    return DiscrepancyLine(
        kind=str(raw.get("kind", "")),
        appointment_id=str(raw.get("appointmentId", "")),
        patient_id=str(patient) if patient else None,
        reason=str(raw.get("reason", "")),
        fields=described,
    )


def accuracy(session: Session, zone: ZoneInfo) -> AccuracyView | None:
    """What `/staff/runs` shows of `pqsync verify`: None before the first measurement."""
    measured = session.scalar(
        select(Verification)
        .where(Verification.status.in_(("accurate", "discrepancies")))
        .order_by(Verification.started_at.desc())
        .limit(1)
    )
    if measured is None:
        return None
    newer = session.scalar(
        select(Verification)
        .where(
            Verification.started_at > measured.started_at,
            Verification.status.in_(("failed", "skipped")),
        )
        .order_by(Verification.started_at.desc())
        .limit(1)
    )
    org_name = (
        session.scalar(select(Organization.name).where(Organization.id == measured.organization_id))
        if measured.organization_id
        else None
    )
    found = measured.missing + measured.extra + measured.stale
    compared = measured.compared
    return AccuracyView(
        percent=100.0 * (compared - found) / compared if compared else 100.0,
        compared=compared,
        measured_at=measured.started_at.astimezone(zone),
        scope=org_name or "all organisations",
        missing=measured.missing,
        extra=measured.extra,
        stale=measured.stale,
        discrepancies=[
            _discrepancy_line(d) for d in measured.discrepancies or [] if isinstance(d, Mapping)
        ],
        not_measured=f"{newer.status}: {newer.error_message}" if newer is not None else None,
    )
