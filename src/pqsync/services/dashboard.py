"""Read queries behind the partner dashboard: roster, appointments, sync history, run progress.

Everything is scoped to the viewer: a partner reaches only patients affiliated with their own
organisation and only runs of their own organisation (anything else raises NotVisible,
exactly as if it did not exist), and sees appointment details, and how many appointments a
sync found, only while that affiliation's ROI consent is active; without it, that a sync
happened and whether it succeeded. Times come back in the organisation's zone, whole seconds.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, and_, bindparam, func, or_, select, tuple_
from sqlalchemy.orm import Session, lazyload

from pqsync.db.lookup import organization_by_ref
from pqsync.db.provider_names import provider_name_column
from pqsync.db.tables import (
    Affiliation,
    Appointment,
    Organization,
    PartnerUser,
    Patient,
    PatientActivity,
    Provider,
    SyncLog,
)
from pqsync.domain import visibility
from pqsync.domain.visibility import Starter
from pqsync.services.access import record_access
from pqsync.services.auth import Principal
from pqsync.services.sync.results import Summary

CONSENT_REQUIRED = "ROI consent required"
# Not "next" in any useful sense for a case manager planning a ride.
NOT_UPCOMING = ("cancelled", "declined", "no_show")
RUN_STATES = ("pending", "running", "done", "failed")
HISTORY_LIMIT = 50
ROSTER_PAGE_DEFAULT = 50
ROSTER_PAGE_MAX = 200
# Organisation and nightly runs are checked in Python for the patient; this bounds the scan.
HISTORY_SCAN = 500


class NotVisible(LookupError):
    """No such thing, or not the viewer's to see (the two are never told apart)."""


class BadCursor(ValueError):
    """A roster cursor that this roster did not hand out."""


class ConsentRequired(PermissionError):
    """The patient is the viewer's, but ROI consent with their organisation is not active."""


def local_time(moment: datetime, zone: ZoneInfo) -> datetime:
    return moment.astimezone(zone).replace(microsecond=0)


def optional_local_time(moment: datetime | None, zone: ZoneInfo) -> datetime | None:
    return None if moment is None else local_time(moment, zone)


def consent_active(affiliation: Affiliation | None, today: date) -> bool:
    """Active status and not past its expiry date (the organisation's today)."""
    if affiliation is None:
        return False
    return visibility.consent_active(
        affiliation.roi_consent_status, affiliation.roi_consent_expires_on, today
    )


def starter_of(user: PartnerUser | None) -> Starter | None:
    return None if user is None else Starter(user.name, user.role, user.organization_id)


def _run_summary(run: SyncLog) -> Summary:
    return Summary(
        new=run.appointments_new,
        updated=run.appointments_updated,
        unchanged=run.appointments_unchanged,
        deleted=run.appointments_deleted,
        errors=run.appointments_errors,
    )


@dataclass(frozen=True)
class PatientRef:
    id: uuid.UUID
    name: str


@dataclass(frozen=True)
class PatientScope:
    """A patient as one viewer sees them: through which organisation, in which zone."""

    patient: Patient
    organization: Organization | None
    affiliation: Affiliation | None
    zone: ZoneInfo
    details_visible: bool

    @property
    def ref(self) -> PatientRef:
        return PatientRef(self.patient.id, self.patient.full_name)


@dataclass(frozen=True)
class ConsentView:
    status: str
    expires_on: date | None
    active: bool
    message: str | None


@dataclass(frozen=True)
class NextAppointment:
    start_time: datetime
    provider_name: str | None
    status: str


@dataclass(frozen=True)
class RosterRow:
    id: uuid.UUID
    name: str
    organization_id: uuid.UUID
    organization_name: str
    roi_consent: ConsentView
    next_appointment: NextAppointment | None
    last_synced_at: datetime | None


@dataclass(frozen=True)
class RosterPage:
    """One page of the roster; `next_cursor` (ids only, no names) fetches the next one."""

    rows: list[RosterRow]
    next_cursor: str | None


def name_matches(words: str) -> ColumnElement[bool]:
    """Every word of the search appears in the first or the last name (any case)."""
    conditions = [
        or_(
            func.lower(Patient.first_name).contains(word, autoescape=True),
            func.lower(Patient.last_name).contains(word, autoescape=True),
        )
        for word in words.lower().split()
    ]
    return and_(True, *conditions)


@dataclass(frozen=True)
class AppointmentView:
    id: uuid.UUID
    pq_appointment_id: str
    start_time: datetime
    end_time: datetime | None
    provider_name: str | None
    status: str
    location_name: str | None
    last_synced_at: datetime | None


@dataclass(frozen=True)
class HistoryEntry:
    synced_at: datetime
    triggered_by: str
    summary: Summary | None  # None: the counts are not the viewer's to see (ROI consent)
    # Why the run left this patient's data possibly out of date (empty: complete).
    incomplete: tuple[str, ...] = ()


@dataclass(frozen=True)
class SyncHistory:
    patient: PatientRef
    last_sync: datetime | None
    history: list[HistoryEntry]


@dataclass(frozen=True)
class RunPatient:
    patient_id: uuid.UUID
    patient_name: str
    state: str
    summary: Summary | None  # None: the counts are not the viewer's to see (ROI consent)
    error_kind: str | None = None  # why this patient failed: unreachable | budget | auth | ...
    # Why this patient's data may be out of date after the run (empty: complete).
    incomplete: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RunProgress:
    run_id: uuid.UUID
    scope: str
    status: str
    triggered_by: str
    organization_id: uuid.UUID | None
    organization_name: str | None
    started_at: datetime
    finished_at: datetime | None
    patients_total: int
    patients_done: int
    summary: Summary
    patients: list[RunPatient]
    error: str | None
    error_kind: str | None = None  # why the run stopped: unreachable | budget | auth | ...
    plan: str | None = None  # window | per_patient | incremental | refetch
    pages_done: int = 0  # the window plan's pages fetched so far
    pages_about: int | None = None  # and about how many it has
    percent: int = 0  # how far the run is, 0-100, in steps a person can follow
    waiting_seconds: int | None = None  # waiting for IntakeQ's request limit, about this long
    waiting_reason: str | None = None  # minute_limit (our count) | rate_limited (IntakeQ's 429)
    # Why a partial run is partial (no patient is named).
    incomplete: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _DetailEntry:
    patient_id: uuid.UUID
    state: str
    summary: Summary
    error_kind: str | None = None
    incomplete: list[str] = field(default_factory=list)


def _strings(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _detail_patients(details: Mapping[str, Any], finished: bool) -> list[_DetailEntry]:
    """Per-patient state and counts from a run's `details`."""
    raw = details.get("patients")
    out: list[_DetailEntry] = []
    for key, value in raw.items() if isinstance(raw, Mapping) else ():
        try:
            patient_id = uuid.UUID(str(key))
        except ValueError:
            continue
        entry = value if isinstance(value, Mapping) else {}
        state = entry.get("state")
        if state not in RUN_STATES:
            state = "done" if finished else "pending"
        kind = entry.get("error_kind")
        out.append(
            _DetailEntry(
                patient_id,
                str(state),
                Summary.from_mapping(entry.get("summary")),
                kind if isinstance(kind, str) else None,
                _strings(entry.get("incomplete")),
            )
        )
    return out


def _waiting(details: Mapping[str, Any]) -> tuple[int | None, str | None]:
    """A run's wait for IntakeQ's request limit that has not ended yet: about how many
    seconds are left (real time: the wait is), and why."""
    raw = details.get("waiting")
    if not isinstance(raw, Mapping):
        return None, None
    try:
        until = datetime.fromisoformat(str(raw.get("until")))
    except ValueError:
        return None, None
    if until.tzinfo is None:
        return None, None
    left = (until - datetime.now(UTC)).total_seconds()
    if left <= 0:
        return None, None
    reason = raw.get("reason")
    return max(1, round(left)), reason if reason in ("minute_limit", "rate_limited") else None


# The window plan's share of the bar taken by its pages; its patients, finished one by one
# once every page is in, take the rest.
WINDOW_PAGES_SHARE = 0.8


def run_percent(status: str, total: int, done: int, pages: Mapping[str, Any] | None) -> int:
    """How far a run is: its patients finished; with the window plan, its pages first
    (most of the bar), then its patients; a stopped run where it stopped. It only rises."""
    if status in ("success", "partial"):
        return 100
    share = done / total if total else 0.0
    if pages:
        fetched, about = pages.get("done"), pages.get("about")
        if isinstance(fetched, int) and isinstance(about, int) and about > 0:
            # Every page is in once the fetch says so (done == about), or a patient finished.
            read = 1.0 if done or fetched >= about else min(fetched / (about + 1), 0.95)
            share = WINDOW_PAGES_SHARE * read + (1 - WINDOW_PAGES_SHARE) * share
    return min(99, int(share * 100))


def _count(details: Mapping[str, Any], key: str, *, default: int) -> int:
    value = details.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


class Dashboard:
    """The dashboard's read side for one viewer at one moment."""

    def __init__(
        self, session: Session, viewer: Principal, *, now: datetime, default_timezone: str
    ) -> None:
        self.session = session
        self.viewer = viewer
        self.now = now
        self.default_zone = ZoneInfo(default_timezone)

    def record(
        self, view: str, patient_ids: Iterable[uuid.UUID], detail: str | None = None
    ) -> None:
        """Put in the access record that the viewer is being shown these patients' data."""
        record_access(
            self.session,
            user=self.viewer,
            view=view,
            patient_ids=patient_ids,
            detail=detail,
            now=self.now,
        )

    # -- scoping -------------------------------------------------------------------------

    def zone_of(self, organization: Organization | None) -> ZoneInfo:
        return ZoneInfo(organization.timezone) if organization is not None else self.default_zone

    def today_in(self, zone: ZoneInfo) -> date:
        return self.now.astimezone(zone).date()

    def organization(self, ref: str) -> Organization:
        """An organisation the viewer may act on (staff: any; partners: their own)."""
        org = organization_by_ref(self.session, ref)
        if org is None or not visibility.may_see_organization(self.viewer, org.id):
            raise NotVisible("no such organization")
        return org

    def patient(self, patient_id: str) -> PatientScope:
        """A patient the viewer may see, through the viewer's organisation (staff: the
        patient's first organisation, and every detail)."""
        try:
            patient = self.session.get(Patient, uuid.UUID(patient_id))
        except ValueError:
            patient = None
        if patient is None:
            raise NotVisible("no such patient")
        query = (
            select(Affiliation, Organization)
            .join(Organization, Organization.id == Affiliation.organization_id)
            .where(Affiliation.patient_id == patient.id)
            .options(lazyload(Affiliation.patient))
            .order_by(Organization.slug)
        )
        if not visibility.is_staff(self.viewer):
            query = query.where(Affiliation.organization_id == self.viewer.organization_id)
        row = self.session.execute(query.limit(1)).first()
        if row is None:
            if not visibility.is_staff(self.viewer):
                raise NotVisible("no such patient")
            return PatientScope(patient, None, None, self.default_zone, details_visible=True)
        affiliation, org = row
        zone = self.zone_of(org)
        visible = visibility.details_visible(
            self.viewer, consent_active(affiliation, self.today_in(zone))
        )
        return PatientScope(patient, org, affiliation, zone, details_visible=visible)

    def counts_visible(self, patient_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
        """Of these patients, those whose appointment counts the viewer may see: staff all,
        a partner those whose ROI consent with the partner's organisation is active."""
        ids = set(patient_ids)
        if visibility.is_staff(self.viewer) or not ids:
            return ids
        zone = self._viewer_zone()
        today = self.today_in(zone)
        return {
            affiliation.patient_id
            for affiliation in self.session.scalars(
                select(Affiliation)
                .where(
                    Affiliation.organization_id == self.viewer.organization_id,
                    Affiliation.patient_id.in_(ids),
                )
                .options(lazyload(Affiliation.patient))
            )
            if consent_active(affiliation, today)
        }

    def _own_patient_ids(self, patient_ids: Iterable[uuid.UUID]) -> set[uuid.UUID]:
        ids = list(patient_ids)
        if not ids:
            return set()
        return set(
            self.session.scalars(
                select(Affiliation.patient_id).where(
                    Affiliation.organization_id == self.viewer.organization_id,
                    Affiliation.patient_id.in_(ids),
                )
            )
        )

    # -- roster and appointments ---------------------------------------------------------

    def roster(
        self,
        organization_id: uuid.UUID | None = None,
        *,
        search: str | None = None,
        limit: int = ROSTER_PAGE_DEFAULT,
        cursor: str | None = None,
    ) -> RosterPage:
        """A page of rows, one per patient and organisation: consent, next appointment,
        last sync. Ordered by organisation, last and first name; `search` matches names."""
        order = (Organization.name, Organization.id, Patient.last_name, Patient.first_name)
        # Plain columns, not ORM objects: a page of 50 rows is built per request.
        query = (
            select(
                Patient.id,
                Patient.first_name,
                Patient.last_name,
                Organization.id,
                Organization.name,
                Organization.timezone,
                Affiliation.roi_consent_status,
                Affiliation.roi_consent_expires_on,
                Affiliation.last_practiceq_sync_at,
            )
            .select_from(Affiliation)
            .join(Patient, Patient.id == Affiliation.patient_id)
            .join(Organization, Organization.id == Affiliation.organization_id)
            .order_by(*order, Patient.id)
        )
        if not visibility.is_staff(self.viewer):
            query = query.where(Affiliation.organization_id == self.viewer.organization_id)
        elif organization_id is not None:
            query = query.where(Affiliation.organization_id == organization_id)
        if search and search.strip():
            query = query.where(name_matches(search))
        if cursor is not None:
            query = query.where(self._after(cursor, (*order, Patient.id)))
        limit = max(1, min(limit, ROSTER_PAGE_MAX))
        rows = self.session.execute(query.limit(limit + 1)).all()
        more = len(rows) > limit
        rows = rows[:limit]
        upcoming = self._next_appointments({row[0] for row in rows})
        roster: list[RosterRow] = []
        for patient_id, first, last_name, org_id, org_name, tz, status, expires, synced in rows:
            zone = ZoneInfo(tz)
            active = visibility.consent_active(status, expires, self.today_in(zone))
            next_appointment = upcoming.get(patient_id)
            shown = next_appointment is not None and visibility.details_visible(self.viewer, active)
            roster.append(
                RosterRow(
                    id=patient_id,
                    name=f"{first} {last_name}".strip(),
                    organization_id=org_id,
                    organization_name=org_name,
                    roi_consent=ConsentView(
                        status=status,
                        expires_on=expires,
                        active=active,
                        message=None if active else CONSENT_REQUIRED,
                    ),
                    next_appointment=NextAppointment(
                        start_time=local_time(next_appointment.start_time, zone),
                        provider_name=next_appointment.provider_name,
                        status=next_appointment.status,
                    )
                    if shown and next_appointment is not None
                    else None,
                    last_synced_at=optional_local_time(synced, zone),
                )
            )
        last = roster[-1] if more and roster else None
        next_cursor = f"{last.organization_id}.{last.id}" if last is not None else None
        return RosterPage(roster, next_cursor)

    def _after(self, cursor: str, columns: tuple[Any, ...]) -> ColumnElement[bool]:
        """Rows after the cursor's row (`ORGID.PATIENTID`) in the roster's order."""
        try:
            org_text, patient_text = cursor.split(".")
            org_id, patient_id = uuid.UUID(org_text), uuid.UUID(patient_text)
        except ValueError:
            raise BadCursor("the cursor is not one this roster handed out") from None
        key = self.session.execute(
            select(Organization.name, Organization.id, Patient.last_name, Patient.first_name)
            .join(Affiliation, Affiliation.organization_id == Organization.id)
            .join(Patient, Patient.id == Affiliation.patient_id)
            .where(Organization.id == org_id, Patient.id == patient_id)
        ).first()
        if key is None:
            raise BadCursor("the cursor's patient is no longer on this roster")
        values = (*key, patient_id)
        bound = [
            bindparam(None, value, type_=column.type)
            for column, value in zip(columns, values, strict=True)
        ]
        return tuple_(*columns) > tuple_(*bound)

    def _next_appointments(self, patient_ids: set[uuid.UUID]) -> dict[uuid.UUID, NextAppointment]:
        if not patient_ids:
            return {}
        upcoming = and_(
            Appointment.deleted_at.is_(None),
            Appointment.start_time >= self.now,
            Appointment.status.not_in(NOT_UPCOMING),
        )
        first = (
            select(Appointment.patient_id, func.min(Appointment.start_time).label("start_time"))
            .where(upcoming, Appointment.patient_id.in_(patient_ids))
            .group_by(Appointment.patient_id)
            .subquery()
        )
        rows = self.session.execute(
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
        ).all()
        found: dict[uuid.UUID, NextAppointment] = {}
        for patient_id, start, provider_name, status in rows:
            found.setdefault(patient_id, NextAppointment(start, provider_name, status))
        return found

    def appointments(self, scope: PatientScope) -> list[AppointmentView]:
        """The patient's stored appointments, soft-deleted ones left out, by start time."""
        if not scope.details_visible:
            raise ConsentRequired(CONSENT_REQUIRED)
        rows = self.session.execute(
            select(Appointment, provider_name_column())
            .outerjoin(Provider, Provider.id == Appointment.provider_id)
            .where(Appointment.patient_id == scope.patient.id, Appointment.deleted_at.is_(None))
            .order_by(Appointment.start_time, Appointment.pq_appointment_id)
        ).all()
        zone = scope.zone
        return [
            AppointmentView(
                id=appointment.id,
                pq_appointment_id=appointment.pq_appointment_id,
                start_time=local_time(appointment.start_time, zone),
                end_time=optional_local_time(appointment.end_time, zone),
                provider_name=provider_name,
                status=appointment.status,
                location_name=appointment.location_name,
                last_synced_at=optional_local_time(appointment.last_synced_at, zone),
            )
            for appointment, provider_name in rows
        ]

    def recent_patient_sync(self, scope: PatientScope, within: timedelta) -> SyncLog | None:
        """The patient's own sync that finished well within `within`, for the same
        organisation: pressing Sync again answers with it, at no cost."""
        org_id = scope.organization.id if scope.organization is not None else None
        return self.session.scalar(
            select(SyncLog)
            .where(
                SyncLog.sync_type == "patient",
                SyncLog.patient_id == scope.patient.id,
                SyncLog.organization_id == org_id,
                SyncLog.status.in_(("success", "partial")),
                SyncLog.finished_at >= self.now - within,
            )
            .order_by(SyncLog.finished_at.desc())
            .limit(1)
        )

    @staticmethod
    def run_incomplete(run: SyncLog) -> list[str]:
        """Why a finished run is partial, in plain words (empty for a complete run)."""
        return _strings((run.details or {}).get("incomplete"))

    def actions_of(self, run_id: uuid.UUID) -> dict[uuid.UUID, str]:
        """What a run did to each appointment it changed: new or updated."""
        rows = self.session.execute(
            select(PatientActivity.appointment_id, PatientActivity.activity_type).where(
                PatientActivity.sync_log_id == run_id, PatientActivity.appointment_id.is_not(None)
            )
        ).all()
        actions = {"appointment_created": "new", "appointment_updated": "updated"}
        actions["appointment_restored"] = "updated"
        return {a: actions[kind] for a, kind in rows if a is not None and kind in actions}

    # -- sync history and runs -----------------------------------------------------------

    def trigger_label(self, run: SyncLog, user: PartnerUser | None) -> str:
        """Who started a run, as the viewer may know it."""
        return visibility.trigger_label(self.viewer, run.triggered_by, starter_of(user))

    def sync_history(self, scope: PatientScope, limit: int = HISTORY_LIMIT) -> SyncHistory:
        """Finished runs that covered the patient, newest first, with the patient's counts."""
        patient_id = scope.patient.id
        org_runs: ColumnElement[bool]
        if visibility.is_staff(self.viewer):
            org_ids = select(Affiliation.organization_id).where(
                Affiliation.patient_id == patient_id
            )
            org_runs = SyncLog.organization_id.in_(org_ids)
        else:
            org_runs = SyncLog.organization_id == self.viewer.organization_id
        rows = self.session.execute(
            select(SyncLog, PartnerUser)
            .outerjoin(PartnerUser, PartnerUser.id == SyncLog.triggered_by_user_id)
            .where(
                SyncLog.status.in_(("success", "partial")),
                or_(
                    and_(SyncLog.sync_type == "patient", SyncLog.patient_id == patient_id),
                    and_(SyncLog.sync_type == "organization", org_runs),
                    SyncLog.sync_type == "nightly",
                ),
            )
            .order_by(SyncLog.started_at.desc())
            .limit(HISTORY_SCAN)
        ).all()
        history: list[HistoryEntry] = []
        summary: Summary
        for run, user in rows:
            entry = next(
                (
                    e
                    for e in _detail_patients(run.details or {}, True)
                    if e.patient_id == patient_id
                ),
                None,
            )
            if run.sync_type == "patient":
                if not visibility.patient_run_in_history(
                    self.viewer, run.organization_id, run.triggered_by, starter_of(user)
                ):
                    continue
                summary = _run_summary(run)
            else:
                if entry is None or entry.state == "failed":
                    continue
                summary = entry.summary
            synced_at = run.finished_at or run.started_at
            history.append(
                HistoryEntry(
                    local_time(synced_at, scope.zone),
                    self.trigger_label(run, user),
                    summary if scope.details_visible else None,
                    tuple(entry.incomplete) if entry is not None else (),
                )
            )
            if len(history) >= limit:
                break
        history.sort(key=lambda h: h.synced_at, reverse=True)
        return SyncHistory(scope.ref, self._last_sync(scope), history)

    def _last_sync(self, scope: PatientScope) -> datetime | None:
        if visibility.is_staff(self.viewer):
            last = self.session.scalar(
                select(func.max(Affiliation.last_practiceq_sync_at)).where(
                    Affiliation.patient_id == scope.patient.id
                )
            )
        else:
            last = scope.affiliation.last_practiceq_sync_at if scope.affiliation else None
        return optional_local_time(last, scope.zone)

    def run(self, run_id: str) -> RunProgress:
        """A run's progress; partners see their organisation's runs and their patients'."""
        try:
            found = self.session.execute(
                select(SyncLog, PartnerUser)
                .outerjoin(PartnerUser, PartnerUser.id == SyncLog.triggered_by_user_id)
                .where(SyncLog.id == uuid.UUID(run_id))
            ).first()
        except ValueError:
            found = None
        if found is None or not visibility.may_see_run(
            self.viewer, found[0].sync_type, found[0].organization_id
        ):
            raise NotVisible("no such run")
        run, user = found
        details = run.details or {}
        finished = run.status != "running"
        entries = _detail_patients(details, finished)
        ids = [entry.patient_id for entry in entries]
        if not visibility.is_staff(self.viewer):
            ids = list(self._own_patient_ids(ids))
        names = {
            patient.id: patient.full_name
            for patient in self.session.scalars(select(Patient).where(Patient.id.in_(ids)))
        }
        counted = self.counts_visible(names)
        patients = sorted(
            (
                RunPatient(
                    e.patient_id,
                    names[e.patient_id],
                    e.state,
                    e.summary if e.patient_id in counted else None,
                    e.error_kind,
                    e.incomplete,
                )
                for e in entries
                if e.patient_id in names
            ),
            key=lambda p: p.patient_name,
        )
        if visibility.is_staff(self.viewer):
            total = _run_summary(run) if finished else Summary.total(e.summary for e in entries)
        else:
            # Totals over the patients whose counts the partner may see, and no others.
            total = Summary.total(p.summary for p in patients if p.summary is not None)
        org = self.session.get(Organization, run.organization_id) if run.organization_id else None
        zone = self.zone_of(org) if org is not None else self._viewer_zone()
        done = sum(e.state in ("done", "failed") for e in entries)
        patients_total = _count(details, "patients_total", default=len(entries))
        patients_done = _count(details, "patients_done", default=done)
        pages = details.get("pages") if isinstance(details.get("pages"), Mapping) else None
        kind, plan = details.get("error_kind"), details.get("plan")
        waiting_seconds, waiting_reason = (None, None) if finished else _waiting(details)
        return RunProgress(
            run_id=run.id,
            scope=run.sync_type,
            status=run.status,
            triggered_by=self.trigger_label(run, user),
            organization_id=org.id if org else None,
            organization_name=org.name if org else None,
            started_at=local_time(run.started_at, zone),
            finished_at=optional_local_time(run.finished_at, zone),
            patients_total=patients_total,
            patients_done=patients_done,
            summary=total,
            patients=patients,
            error=run.error_message,
            error_kind=kind if isinstance(kind, str) else None,
            plan=plan if isinstance(plan, str) else None,
            pages_done=_count(pages or {}, "done", default=0),
            pages_about=_count(pages or {}, "about", default=0) or None,
            percent=run_percent(run.status, patients_total, patients_done, pages),
            waiting_seconds=waiting_seconds,
            waiting_reason=waiting_reason,
            incomplete=_strings(details.get("incomplete")),
        )

    def _viewer_zone(self) -> ZoneInfo:
        if self.viewer.organization_id is None:
            return self.default_zone
        return self.zone_of(self.session.get(Organization, self.viewer.organization_id))
