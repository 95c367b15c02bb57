"""Writing what a sync fetched: match, diff, batched upsert, soft delete, audit.

One page is written in one transaction: a select of the page's stored rows, one
INSERT .. ON CONFLICT DO UPDATE for the new and changed rows, one insert of activity entries.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, Table, bindparam, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from pqsync.db.engine import begin_write
from pqsync.db.tables import Appointment as AppointmentRow
from pqsync.db.tables import Patient, PatientActivity, Provider, ProviderIntakeQSettings, Service
from pqsync.domain.diff import (
    TRACKED_FIELDS,
    appointment_changes,
    changes_as_json,
    describe_changes,
)
from pqsync.domain.status import map_status
from pqsync.domain.times import local_day_bounds
from pqsync.domain.windows import Window
from pqsync.intakeq.models import Appointment, MalformedRecord
from pqsync.services.sync_types import (
    Actor,
    PatientResult,
    SyncedAppointment,
    SyncResult,
)

Record = Appointment | MalformedRecord

ACTIVITY_TABLE = cast(Table, PatientActivity.__table__)
APPOINTMENT_TABLE = cast(Table, AppointmentRow.__table__)
PATIENT_TABLE = cast(Table, Patient.__table__)
_STORED_COLUMNS = (
    AppointmentRow.id,
    AppointmentRow.pq_appointment_id,
    AppointmentRow.created_at,
    *(getattr(AppointmentRow, name) for name in TRACKED_FIELDS),
)

# The most appointments (or warnings) one run lists in its log.
MAX_LISTED_UNKNOWN = 200

_UPSERT_COLUMNS = (
    "patient_id",
    "provider_id",
    "service_id",
    "intakeq_practitioner_id",
    "intakeq_client_id",
    "status",
    "intakeq_status",
    "start_time",
    "end_time",
    "location_name",
    "metadata",
    "intakeq_last_modified",
    "deleted_at",
    "updated_at",
    "last_synced_at",
)


@dataclass
class Lookups:
    """Id maps loaded once per run."""

    providers_by_practitioner: dict[str, uuid.UUID]
    provider_names: dict[uuid.UUID, str]
    services_by_intakeq: dict[str, uuid.UUID]

    @classmethod
    def load(cls, session: Session) -> Lookups:
        mapped = session.execute(
            select(ProviderIntakeQSettings.intakeq_practitioner_id, Provider.id).join(
                Provider, Provider.id == ProviderIntakeQSettings.provider_id
            )
        ).all()
        names = session.execute(select(Provider.id, Provider.name)).all()
        services = session.execute(select(Service.intakeq_service_id, Service.id)).all()
        return cls(
            providers_by_practitioner=dict(mapped),
            provider_names=dict(names),
            services_by_intakeq=dict(services),
        )


class PatientMatcher:
    """Exact matching of IntakeQ clients to our patients: ClientId first, else email.

    Never trusts IntakeQ's partial-match `client` filter. A patient's ClientId is learned on
    the first email match and used from then on.
    """

    def __init__(self, patients: Iterable[Patient]) -> None:
        self.by_client_id: dict[int, Patient] = {}
        self.by_email: dict[str, Patient] = {}
        for patient in patients:
            if patient.intakeq_client_id is not None:
                self.by_client_id[patient.intakeq_client_id] = patient
            self.by_email[patient.email.lower()] = patient
        self.learned: dict[uuid.UUID, int] = {}

    def owner_of(self, client_id: int | None, email: str | None) -> Patient | None:
        """Whose record this is, without learning anything (for records we cannot use)."""
        if client_id is not None and client_id in self.by_client_id:
            return self.by_client_id[client_id]
        patient = self.by_email.get((email or "").lower()) if email else None
        if patient is not None and patient.intakeq_client_id not in (None, client_id):
            return None
        return patient

    def match(self, appointment: Appointment) -> Patient | None:
        if appointment.client_id is not None and appointment.client_id in self.by_client_id:
            return self.by_client_id[appointment.client_id]
        email = (appointment.client_email or "").lower()
        patient = self.by_email.get(email) if email else None
        if patient is None or patient.intakeq_client_id is not None:
            # Unknown, or our email now belongs to another IntakeQ client: not this patient.
            return None
        if appointment.client_id is not None:
            patient.intakeq_client_id = appointment.client_id
            self.by_client_id[appointment.client_id] = patient
            self.learned[patient.id] = appointment.client_id
        return patient


@dataclass
class RunContext:
    """What one run carries from page to page."""

    run_id: uuid.UUID
    actor: Actor
    zone: ZoneInfo
    lookups: Lookups
    matcher: PatientMatcher
    results: dict[uuid.UUID, PatientResult]
    result: SyncResult
    # Every Id IntakeQ returned in this run, matched or not: absence means only what it says.
    fetched_ids: set[str] = field(default_factory=set)
    # Ids written (or judged not ours) in this run, so overlapping fetches count once.
    handled_ids: set[str] = field(default_factory=set)
    # A malformed record without an Id makes absence unprovable for this run.
    unidentified_malformed: bool = False
    # Per-appointment outcomes are kept only where someone reads them (a patient's run):
    # an organisation's or the nightly run stays flat in memory however much it syncs.
    keep_appointments: bool = True


class AppointmentStore:
    def __init__(self, engine: Engine, clock: Callable[[], datetime]) -> None:
        self.engine = engine
        self.clock = clock
        self._insert: Any = (
            postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        )

    def write_page(
        self,
        session: Session,
        ctx: RunContext,
        page: list[Record],
        *,
        only_patient: uuid.UUID | None = None,
    ) -> list[tuple[Appointment, Patient]]:
        """Match, diff and write one page; return the records that belong to our patients.

        With `only_patient`, records of other patients are left for their own query.
        """
        matched: list[tuple[Appointment, Patient]] = []
        for record in page:
            if isinstance(record, MalformedRecord):
                self._note_malformed(ctx, record)
                continue
            ctx.fetched_ids.add(record.id)
            if record.id in ctx.handled_ids:
                continue  # already written in this run (pages shift, plans overlap)
            patient = ctx.matcher.match(record)
            if patient is not None and only_patient is not None and patient.id != only_patient:
                continue
            ctx.handled_ids.add(record.id)
            if patient is None or patient.id not in ctx.results:
                self._note_unknown(ctx, record)
                continue
            matched.append((record, patient))
        begin_write(session)
        if matched:
            self._write(session, ctx, matched)
        if ctx.matcher.learned:
            session.execute(
                update(PATIENT_TABLE)
                .where(PATIENT_TABLE.c.id == bindparam("learned_id"))
                .values(intakeq_client_id=bindparam("learned_client_id")),
                [
                    {"learned_id": patient_id, "learned_client_id": client_id}
                    for patient_id, client_id in ctx.matcher.learned.items()
                ],
            )
            ctx.matcher.learned.clear()
        session.commit()
        return matched

    @staticmethod
    def _note_malformed(ctx: RunContext, record: MalformedRecord) -> None:
        """A broken record is an error when it is (or may be) one of this run's patients'."""
        if record.appointment_id:
            ctx.fetched_ids.add(record.appointment_id)
        owner = ctx.matcher.owner_of(record.client_id, record.client_email)
        if owner is None and (record.client_id is not None or record.client_email):
            ctx.result.unknown_clients += 1  # another client's record: not ours to judge
            return
        if owner is not None and owner.id not in ctx.results:
            return
        if not record.appointment_id:
            ctx.unidentified_malformed = True
        ctx.result.malformed += 1
        if len(ctx.result.warnings) < MAX_LISTED_UNKNOWN:
            where = f" (appointment {record.appointment_id})" if record.appointment_id else ""
            ctx.result.warnings.append(f"malformed record skipped{where}: {record.reason}")

    @staticmethod
    def _note_unknown(ctx: RunContext, record: Appointment) -> None:
        result = ctx.result
        result.unknown_clients += 1
        if len(result.unknown_appointments) < MAX_LISTED_UNKNOWN:
            result.unknown_appointments.append(
                {"clientId": record.client_id, "appointmentId": record.id}
            )

    def _write(
        self, session: Session, ctx: RunContext, matched: list[tuple[Appointment, Patient]]
    ) -> None:
        now = self.clock()
        # Plain rows of just the compared columns: ORM objects cost more than the write.
        existing = {
            row.pq_appointment_id: row
            for row in session.execute(
                select(*_STORED_COLUMNS).where(
                    AppointmentRow.pq_appointment_id.in_([a.id for a, _ in matched])
                )
            )
        }
        writes: list[dict[str, Any]] = []
        activities: list[dict[str, Any]] = []
        labels = {str(k): v for k, v in ctx.lookups.provider_names.items()}
        for appointment, patient in matched:
            incoming = self._row_values(ctx, appointment, patient)
            stored = existing.get(appointment.id)
            patient_result = ctx.results[patient.id]
            provider_id = incoming["provider_id"]
            provider_name = ctx.lookups.provider_names.get(provider_id) if provider_id else None
            if stored is None:
                row_id = uuid.uuid4()
                action = "new"
                patient_result.summary.new += 1
                writes.append({"id": row_id, "created_at": now, **incoming})
                when = appointment.start.astimezone(ctx.zone)
                activities.append(
                    self._activity(
                        ctx,
                        patient.id,
                        row_id,
                        "appointment_created",
                        f"New appointment {appointment.id} on {when:%Y-%m-%d %H:%M %Z} "
                        f"({incoming['status']}"
                        + (f", {provider_name}" if provider_name else "")
                        + ") synced from IntakeQ",
                        {},
                        now,
                    )
                )
            else:
                row_id = stored.id
                stored_values = {name: getattr(stored, name) for name in TRACKED_FIELDS}
                changes = appointment_changes(stored_values, incoming)
                if changes:
                    action = "updated"
                    patient_result.summary.updated += 1
                    writes.append({"id": row_id, "created_at": stored.created_at, **incoming})
                    kind = (
                        "appointment_restored"
                        if "deleted_at" in changes and incoming["deleted_at"] is None
                        else "appointment_updated"
                    )
                    activities.append(
                        self._activity(
                            ctx,
                            patient.id,
                            row_id,
                            kind,
                            f"Appointment {appointment.id} changed in IntakeQ: "
                            + describe_changes(changes, labels),
                            changes_as_json(changes),
                            now,
                        )
                    )
                else:
                    action = "unchanged"
                    patient_result.summary.unchanged += 1
            if ctx.keep_appointments:
                patient_result.appointments.append(
                    SyncedAppointment(
                        id=row_id,
                        pq_appointment_id=appointment.id,
                        start_time=appointment.start,
                        provider_name=provider_name,
                        status=incoming["status"],
                        action=action,
                    )
                )
        if writes:
            for values in writes:
                values.update(updated_at=now, last_synced_at=now)
                values["metadata"] = values.pop("extra")
            table = APPOINTMENT_TABLE
            statement = self._insert(table)
            statement = statement.on_conflict_do_update(
                index_elements=["pq_appointment_id"],
                set_={name: getattr(statement.excluded, name) for name in _UPSERT_COLUMNS},
            ).returning(table.c.pq_appointment_id, table.c.id)
            # A concurrent run may have inserted the row first: its id is the one that stays.
            kept = dict(session.execute(statement, writes).all())
            provisional = {w["pq_appointment_id"]: w["id"] for w in writes}
            renamed = {provisional[pq]: kept[pq] for pq in kept if kept[pq] != provisional[pq]}
            if renamed:
                for activity in activities:
                    activity["appointment_id"] = renamed.get(
                        activity["appointment_id"], activity["appointment_id"]
                    )
                for _appointment, patient in matched:
                    for synced in ctx.results[patient.id].appointments:
                        synced.id = renamed.get(synced.id, synced.id)
        if activities:
            session.execute(insert(ACTIVITY_TABLE), activities)

    def _row_values(
        self, ctx: RunContext, appointment: Appointment, patient: Patient
    ) -> dict[str, Any]:
        lookups = ctx.lookups
        provider_id = None
        if appointment.practitioner_id:
            provider_id = lookups.providers_by_practitioner.get(appointment.practitioner_id)
            if provider_id is None:
                unmatched = ctx.result.unmatched_practitioners
                key = appointment.practitioner_id
                unmatched[key] = unmatched.get(key, 0) + 1
        service_id = (
            lookups.services_by_intakeq.get(appointment.service_id)
            if appointment.service_id
            else None
        )
        return {
            "pq_appointment_id": appointment.id,
            "patient_id": patient.id,
            "provider_id": provider_id,
            "service_id": service_id,
            "intakeq_practitioner_id": appointment.practitioner_id,
            "intakeq_client_id": appointment.client_id,
            "status": map_status(appointment.status),
            "intakeq_status": appointment.status,
            "start_time": appointment.start,
            "end_time": appointment.end,
            "location_name": appointment.location_name,
            "extra": appointment.metadata,
            "intakeq_last_modified": appointment.last_modified,
            "deleted_at": None,
        }

    def _activity(
        self,
        ctx: RunContext,
        patient_id: uuid.UUID,
        appointment_id: uuid.UUID,
        activity_type: str,
        description: str,
        changes: dict[str, Any],
        now: datetime,
    ) -> dict[str, Any]:
        return {
            "id": uuid.uuid4(),
            "patient_id": patient_id,
            "appointment_id": appointment_id,
            "sync_log_id": ctx.run_id,
            "activity_type": activity_type,
            "description": description,
            "changes": changes,
            "actor": ctx.actor.kind,
            "actor_user_id": ctx.actor.user_id,
            "created_at": now,
        }

    # -- deletions -----------------------------------------------------------------------

    def absent_rows(
        self,
        session: Session,
        ctx: RunContext,
        patient_ids: Iterable[uuid.UUID],
        window: Window,
    ) -> list[AppointmentRow]:
        """Live stored rows of these patients in the window that a complete fetch did not return."""
        begin_write(session)  # the caller soft-deletes them in the same transaction
        start, _ = local_day_bounds(window.start, ctx.zone)
        _, end = local_day_bounds(window.end, ctx.zone)
        # Streamed in chunks: a window of 100,000 stored rows is never in memory at once.
        stored = session.execute(
            select(AppointmentRow.id, AppointmentRow.pq_appointment_id, AppointmentRow.patient_id)
            .execution_options(yield_per=2000)
            .where(
                AppointmentRow.deleted_at.is_(None),
                AppointmentRow.start_time >= start,
                AppointmentRow.start_time < end,
            )
        )
        wanted = set(patient_ids)
        absent = [
            row.id
            for row in stored
            if row.patient_id in wanted and row.pq_appointment_id not in ctx.fetched_ids
        ]
        if not absent:
            return []
        return list(session.scalars(select(AppointmentRow).where(AppointmentRow.id.in_(absent))))

    def rows_by_pq_id(self, session: Session, pq_ids: list[str]) -> list[AppointmentRow]:
        if not pq_ids:
            return []
        return list(
            session.scalars(
                select(AppointmentRow).where(AppointmentRow.pq_appointment_id.in_(pq_ids))
            )
        )

    def soft_delete(
        self, session: Session, ctx: RunContext, rows: list[AppointmentRow], reason: str
    ) -> None:
        """Mark rows deleted (kept for history) and audit each; counts go to their patients."""
        now = self.clock()
        activities = []
        for row in rows:
            if row.deleted_at is not None:
                continue
            row.deleted_at = now
            row.updated_at = now
            patient_result = ctx.results.get(row.patient_id)
            if patient_result is not None:
                patient_result.summary.deleted += 1
            if patient_result is not None and ctx.keep_appointments:
                patient_result.appointments.append(
                    SyncedAppointment(
                        id=row.id,
                        pq_appointment_id=row.pq_appointment_id,
                        start_time=row.start_time,
                        provider_name=ctx.lookups.provider_names.get(row.provider_id)
                        if row.provider_id
                        else None,
                        status=row.status,
                        action="deleted",
                    )
                )
            activities.append(
                self._activity(
                    ctx,
                    row.patient_id,
                    row.id,
                    "appointment_deleted",
                    f"Appointment {row.pq_appointment_id} was deleted in IntakeQ ({reason})",
                    changes_as_json({"deleted_at": (None, now)}),
                    now,
                )
            )
        if activities:
            session.execute(insert(ACTIVITY_TABLE), activities)
        session.commit()
