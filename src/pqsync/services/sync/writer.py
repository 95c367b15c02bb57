"""Writing one fetched page: match each record to a patient, diff it against the stored row,
then one batched upsert (`INSERT .. ON CONFLICT DO UPDATE`) and one insert of audit entries,
in one transaction that first checks the run still holds its lease."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from pqsync.db.engine import begin_write
from pqsync.db.tables import Appointment as AppointmentRow
from pqsync.db.tables import Patient
from pqsync.domain.diff import TRACKED_FIELDS, appointment_changes
from pqsync.domain.matching import PatientIdentity
from pqsync.domain.status import map_status
from pqsync.intakeq.models import Appointment, MalformedRecord
from pqsync.services.sync import audit as sync_audit
from pqsync.services.sync.context import MAX_LISTED, RunContext
from pqsync.services.sync.results import SyncedAppointment

Record = Appointment | MalformedRecord

APPOINTMENTS = cast(Table, AppointmentRow.__table__)
PATIENTS = cast(Table, Patient.__table__)
# What IntakeQ's record sets, besides the key: written on insert and on every change.
_FROM_INTAKEQ = tuple(name for name in TRACKED_FIELDS if name != "deleted_at")


class AppointmentWriter:
    """Writes pages of IntakeQ records for one run (`RunContext`)."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.clock = clock

    def write_page(
        self,
        session: Session,
        ctx: RunContext,
        page: list[Record],
        *,
        only_patient: uuid.UUID | None = None,
    ) -> None:
        """Match, diff and write one page in one transaction of `session`.

        With `only_patient`, records of other patients are left for their own query.
        """
        matched = self._match(ctx, page, only_patient)
        learned = ctx.matcher.take_learned()
        try:
            begin_write(session)
            conn = session.connection()
            ctx.check_lease(conn)
            outcomes = self._write(conn, ctx, matched) if matched else []
            if learned:
                conn.execute(
                    update(PATIENTS)
                    .where(PATIENTS.c.id == bindparam("learned_id"))
                    .values(intakeq_client_id=bindparam("learned_client_id")),
                    [{"learned_id": p, "learned_client_id": c} for p, c in learned.items()],
                )
            session.commit()
        except BaseException:
            session.rollback()
            raise
        for appointment, patient_id, row_id, action in outcomes:
            self._count(ctx, appointment, patient_id, row_id, action)

    # -- matching --------------------------------------------------------------------------

    def _match(
        self, ctx: RunContext, page: list[Record], only_patient: uuid.UUID | None
    ) -> list[tuple[Appointment, PatientIdentity]]:
        matched: list[tuple[Appointment, PatientIdentity]] = []
        seen: set[str] = set()
        for record in page:
            if isinstance(record, MalformedRecord):
                self._note_malformed(ctx, record)
                continue
            ctx.fetched_ids.add(record.id)
            if record.id in seen:
                continue  # IntakeQ listed it twice on one page
            seen.add(record.id)
            owner = ctx.matcher.owner_of(record.client_id, record.client_email)
            if owner is not None and only_patient is not None and owner.id != only_patient:
                continue  # another of our patients': their own query writes it
            patient = ctx.matcher.match(record.client_id, record.client_email)
            if patient is None or patient.id not in ctx.results:
                self._note_unknown(ctx, record)
                continue
            practitioner = record.practitioner_id
            if practitioner and practitioner not in ctx.lookups.providers_by_practitioner:
                unmatched = ctx.result.unmatched_practitioners
                unmatched[practitioner] = unmatched.get(practitioner, 0) + 1
            matched.append((record, patient))
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
        where = f" (appointment {record.appointment_id})" if record.appointment_id else ""
        ctx.warn(f"malformed record skipped{where}: {record.reason}")

    @staticmethod
    def _note_unknown(ctx: RunContext, record: Appointment) -> None:
        result = ctx.result
        result.unknown_clients += 1
        if len(result.unknown_appointments) < MAX_LISTED:
            result.unknown_appointments.append(
                {"clientId": record.client_id, "appointmentId": record.id}
            )

    # -- writing ---------------------------------------------------------------------------

    def _write(
        self,
        conn: Connection,
        ctx: RunContext,
        matched: list[tuple[Appointment, PatientIdentity]],
    ) -> list[tuple[Appointment, uuid.UUID, uuid.UUID, str]]:
        """Diff and upsert; returns (appointment, patient id, row id, action) per record."""
        now = self.clock()
        columns = [APPOINTMENTS.c[name] for name in ("id", "pq_appointment_id", *TRACKED_FIELDS)]
        stored: dict[str, dict[str, Any]] = {
            row.pq_appointment_id: dict(row._mapping)
            for row in conn.execute(
                select(*columns).where(
                    APPOINTMENTS.c.pq_appointment_id.in_([a.id for a, _ in matched])
                )
            )
        }
        rows: list[dict[str, Any]] = []
        pending: list[tuple[Appointment, uuid.UUID, dict[str, tuple[Any, Any]] | None]] = []
        outcomes: list[tuple[Appointment, uuid.UUID, uuid.UUID, str]] = []
        for appointment, patient in matched:
            incoming = self._row_values(ctx, appointment, patient.id)
            existing = stored.get(appointment.id)
            if existing is None:
                changes = None
            else:
                changes = appointment_changes(existing, incoming)
                if not changes:
                    outcomes.append((appointment, patient.id, existing["id"], "unchanged"))
                    continue
            stamps = {"created_at": now, "updated_at": now, "last_synced_at": now}
            rows.append({**incoming, "id": uuid.uuid4(), **stamps})
            pending.append((appointment, patient.id, changes))
        if not rows:
            return outcomes
        # A row another run stored since our read keeps its id: RETURNING says which it is.
        kept = {pq_id: row_id for pq_id, row_id in conn.execute(self._upsert(conn), rows)}
        entries = []
        for (appointment, patient_id, changes), row in zip(pending, rows, strict=True):
            row_id = kept[appointment.id]
            if changes is None:
                entries.append(sync_audit.created(ctx, patient_id, row_id, row, now))
                outcomes.append((appointment, patient_id, row_id, "new"))
            else:
                entries.append(
                    sync_audit.changed(ctx, patient_id, row_id, appointment.id, changes, now)
                )
                outcomes.append((appointment, patient_id, row_id, "updated"))
        sync_audit.record(conn, entries)
        return outcomes

    @staticmethod
    def _upsert(conn: Connection) -> Any:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(APPOINTMENTS)
        changed = [*_FROM_INTAKEQ, "deleted_at", "updated_at", "last_synced_at"]
        return statement.on_conflict_do_update(
            index_elements=[APPOINTMENTS.c.pq_appointment_id],
            set_={name: statement.excluded[name] for name in changed},
        ).returning(APPOINTMENTS.c.pq_appointment_id, APPOINTMENTS.c.id)

    @staticmethod
    def _row_values(
        ctx: RunContext, appointment: Appointment, patient_id: uuid.UUID
    ) -> dict[str, Any]:
        """The columns IntakeQ's record sets (a listed record is live: deleted_at None)."""
        lookups = ctx.lookups
        practitioner, service = appointment.practitioner_id, appointment.service_id
        return {
            "pq_appointment_id": appointment.id,
            "patient_id": patient_id,
            "provider_id": lookups.providers_by_practitioner.get(practitioner or ""),
            "service_id": lookups.services_by_intakeq.get(service or ""),
            "intakeq_practitioner_id": practitioner,
            "intakeq_client_id": appointment.client_id,
            "status": map_status(appointment.status),
            "intakeq_status": appointment.status,
            "start_time": appointment.start,
            "end_time": appointment.end,
            "location_name": appointment.location_name,
            "metadata": appointment.metadata,
            "intakeq_last_modified": appointment.last_modified,
            "deleted_at": None,
        }

    @staticmethod
    def _count(
        ctx: RunContext,
        appointment: Appointment,
        patient_id: uuid.UUID,
        row_id: uuid.UUID,
        action: str,
    ) -> None:
        """Count what a write did to one appointment (and list it, in a patient's run)."""
        result = ctx.results[patient_id]
        if action == "new":
            result.summary.new += 1
        elif action == "updated":
            result.summary.updated += 1
        else:
            result.summary.unchanged += 1
        if ctx.keep_appointments:
            result.appointments.append(
                SyncedAppointment(
                    id=row_id,
                    pq_appointment_id=appointment.id,
                    start_time=appointment.start,
                    provider_name=ctx.lookups.provider_name(appointment.practitioner_id),
                    status=map_status(appointment.status),
                    action=action,
                )
            )
