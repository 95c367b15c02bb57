"""Writing one fetched page: match each record to a patient, diff it against the stored row,
then one batched upsert (`INSERT .. ON CONFLICT DO UPDATE`) and one insert of audit entries,
in one transaction that first checks the run still holds its lease."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from pqsync.db.engine import begin_write
from pqsync.db.tables import Appointment as AppointmentRow
from pqsync.db.tables import Patient
from pqsync.domain.diff import TRACKED_FIELDS, appointment_changes
from pqsync.domain.status import map_status
from pqsync.intakeq.models import Appointment, MalformedRecord, version
from pqsync.services.sync import audit as sync_audit
from pqsync.services.sync.context import MAX_LISTED, Lookups, RunContext
from pqsync.services.sync.identity import ClientIdChange, PatientIdentity
from pqsync.services.sync.plan import PAGE_SIZE
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

        With `only_patient`, records of other patients are left for their own query, unless
        we store them for `only_patient` (then they move to their owner)."""
        records = self._appointments(ctx, page)
        for record in records:  # questions to IntakeQ, before the database is locked
            ctx.identity.prepare(record.client_id, record.client_email)
        changes: list[ClientIdChange] = []
        try:
            begin_write(session)
            conn = session.connection()
            ctx.check_lease(conn)
            stored = self._stored(conn, [r.id for r in records])
            matched, leaving = self._resolve(ctx, records, stored, only_patient)
            changes = ctx.identity.take_changes()
            outcomes = self._write(conn, ctx, matched, stored) if matched else []
            self._store_identity(conn, ctx, changes)
            removed = self._remove(conn, ctx, leaving, stored)
            session.commit()
        except BaseException:
            session.rollback()
            ctx.identity.undo(changes)
            raise
        for appointment, patient_id, row_id, action in outcomes:
            self._count(ctx, appointment, patient_id, row_id, action)
        for patient_id in removed:
            if patient_id in ctx.results:
                ctx.results[patient_id].summary.deleted += 1

    # -- matching --------------------------------------------------------------------------

    def _appointments(self, ctx: RunContext, page: list[Record]) -> list[Appointment]:
        found: list[Appointment] = []
        seen: set[str] = set()
        if len(page) >= PAGE_SIZE:
            ctx.paged = True  # a listing with another page: IntakeQ may change between them
        for record in page:
            if isinstance(record, MalformedRecord):
                self._note_malformed(ctx, record)
                continue
            ctx.fetched_ids.add(record.id)
            ctx.seen_versions.setdefault(record.id, set()).add(version(record))
            if record.id in seen:
                continue  # IntakeQ listed it twice on one page
            seen.add(record.id)
            found.append(record)
        return found

    @staticmethod
    def _stored(conn: Connection, pq_ids: list[str]) -> dict[str, dict[str, Any]]:
        if not pq_ids:
            return {}
        columns = [APPOINTMENTS.c[name] for name in ("id", "pq_appointment_id", *TRACKED_FIELDS)]
        return {
            row.pq_appointment_id: dict(row._mapping)
            for row in conn.execute(
                select(*columns).where(APPOINTMENTS.c.pq_appointment_id.in_(pq_ids))
            )
        }

    def _resolve(
        self,
        ctx: RunContext,
        records: list[Appointment],
        stored: dict[str, dict[str, Any]],
        only_patient: uuid.UUID | None,
    ) -> tuple[list[tuple[Appointment, PatientIdentity]], list[Appointment]]:
        """(records to write, with their owner; stored records no patient of ours owns)."""
        identity = ctx.identity
        matched: list[tuple[Appointment, PatientIdentity]] = []
        leaving: list[Appointment] = []
        for record in records:
            row = stored.get(record.id)
            stored_for: uuid.UUID | None = row["patient_id"] if row else None
            owner = identity.resolve(record.client_id, record.client_email, stored_for)
            refused = identity.refused_for(record.client_id, record.client_email, owner)
            if refused is not None:
                ctx.warn(
                    f"patient {refused}: IntakeQ client {record.client_id} carries this "
                    "patient's email but is already another patient's; its appointments "
                    "were not matched to this patient"
                )
                ctx.incomplete(
                    refused,
                    "IntakeQ lists this patient's email under a client that another patient "
                    "here already has; staff should check the two patients and IntakeQ",
                )
            if owner is None:
                if row is not None and row["deleted_at"] is None:
                    leaving.append(record)
                else:
                    self._note_unknown(ctx, record)
                continue
            if only_patient is not None and owner.id != only_patient != stored_for:
                continue  # another of our patients': their own query writes it
            if owner.id not in ctx.results and stored_for in (None, owner.id):
                self._note_unknown(ctx, record)  # another organisation's patient
                continue
            practitioner = record.practitioner_id
            if practitioner and practitioner not in ctx.lookups.providers_by_practitioner:
                unmatched = ctx.result.unmatched_practitioners
                unmatched[practitioner] = unmatched.get(practitioner, 0) + 1
            matched.append((record, owner))
        return matched, leaving

    @staticmethod
    def _note_malformed(ctx: RunContext, record: MalformedRecord) -> None:
        """A broken record is an error when it is (or may be) one of this run's patients'."""
        if record.appointment_id:
            ctx.fetched_ids.add(record.appointment_id)
        owner = ctx.identity.owner_of(record.client_id, record.client_email)
        if owner is None and (record.client_id is not None or record.client_email):
            ctx.result.unknown_clients += 1  # another client's record: not ours to judge
            if record.client_id is not None:
                _count_client(ctx.result.unknown_by_client, str(record.client_id))
            return
        if owner is not None and owner.id not in ctx.results:
            return
        if not record.appointment_id:
            ctx.unidentified_malformed = True
        ctx.result.malformed += 1
        where = f" (appointment {record.appointment_id})" if record.appointment_id else ""
        ctx.warn(f"malformed record skipped{where}: {record.reason}")
        ctx.incomplete(
            owner.id if owner is not None else None,
            f"IntakeQ sent an unreadable appointment record{where}; it may be out of date here",
        )

    @staticmethod
    def _note_unknown(ctx: RunContext, record: Appointment) -> None:
        result = ctx.result
        result.unknown_clients += 1
        if record.client_id is not None:
            _count_client(result.unknown_by_client, str(record.client_id))
        if len(result.unknown_appointments) < MAX_LISTED:
            result.unknown_appointments.append(
                {"clientId": record.client_id, "appointmentId": record.id}
            )

    # -- writing ---------------------------------------------------------------------------

    def _store_identity(
        self, conn: Connection, ctx: RunContext, changes: list[ClientIdChange]
    ) -> None:
        """Store learned and followed ClientIds; a followed one is audited on the patient."""
        if not changes:
            return
        now = self.clock()
        conn.execute(
            update(PATIENTS)
            .where(PATIENTS.c.id == bindparam("changed_id"))
            .values(intakeq_client_id=bindparam("changed_client_id")),
            [{"changed_id": c.patient_id, "changed_client_id": c.new} for c in changes],
        )
        sync_audit.record(
            conn,
            [
                sync_audit.client_id_followed(ctx, c.patient_id, c.old, c.new, now)
                for c in changes
                if c.old is not None
            ],
        )

    def _remove(
        self,
        conn: Connection,
        ctx: RunContext,
        leaving: list[Appointment],
        stored: dict[str, dict[str, Any]],
    ) -> list[uuid.UUID]:
        """Take off our patients' pages the appointments IntakeQ now lists under a client
        who is not our patient (kept, marked deleted, the reason in the history)."""
        if not leaving:
            return []
        now = self.clock()
        rows = [stored[record.id] for record in leaving]
        conn.execute(
            update(APPOINTMENTS)
            .where(APPOINTMENTS.c.id == bindparam("row_id"))
            .values(deleted_at=now, updated_at=now),
            [{"row_id": row["id"]} for row in rows],
        )
        sync_audit.record(
            conn,
            [
                sync_audit.left(
                    ctx,
                    row["patient_id"],
                    row["id"],
                    row["pq_appointment_id"],
                    "IntakeQ now lists it under a client who is not this patient",
                    now,
                )
                for row in rows
            ],
        )
        return [row["patient_id"] for row in rows]

    def _write(
        self,
        conn: Connection,
        ctx: RunContext,
        matched: list[tuple[Appointment, PatientIdentity]],
        stored: dict[str, dict[str, Any]],
    ) -> list[tuple[Appointment, uuid.UUID, uuid.UUID, str]]:
        """Diff and upsert; returns (appointment, patient id, row id, action) per record.
        A stored row whose IntakeQ LastModified is newer than the record's is left as it
        is: the record was fetched before that change (newer wins)."""
        now = self.clock()
        rows: list[dict[str, Any]] = []
        pending: list[tuple[Appointment, uuid.UUID, dict[str, tuple[Any, Any]] | None]] = []
        outcomes: list[tuple[Appointment, uuid.UUID, uuid.UUID, str]] = []
        moved: list[dict[str, Any]] = []
        for appointment, patient in matched:
            incoming = self._row_values(ctx, appointment, patient.id)
            existing = stored.get(appointment.id)
            if existing is None:
                changes = None
            else:
                if _newer(existing["intakeq_last_modified"], appointment.last_modified):
                    outcomes.append((appointment, patient.id, existing["id"], "unchanged"))
                    continue
                changes = appointment_changes(existing, incoming)
                if not changes:
                    outcomes.append((appointment, patient.id, existing["id"], "unchanged"))
                    continue
                if "patient_id" in changes:
                    old_patient = changes.pop("patient_id")[0]
                    moved.append(
                        sync_audit.left(
                            ctx,
                            old_patient,
                            existing["id"],
                            appointment.id,
                            "IntakeQ now lists it under another client",
                            now,
                        )
                    )
            stamps = {"created_at": now, "updated_at": now, "last_synced_at": now}
            rows.append({**incoming, "id": uuid.uuid4(), **stamps})
            pending.append((appointment, patient.id, changes))
        if not rows:
            return outcomes
        # A row another run stored since our read keeps its id: RETURNING says which it is;
        # one it stored from a newer record is not replaced (and not returned).
        kept = {pq_id: row_id for pq_id, row_id in conn.execute(self._upsert(conn), rows)}
        entries = list(moved)
        for (appointment, patient_id, changes), row in zip(pending, rows, strict=True):
            row_id = kept.get(appointment.id)
            if row_id is None:
                continue  # a newer version was stored meanwhile: it stays
            if changes is None:
                entries.append(sync_audit.created(ctx, patient_id, row_id, row, now))
                outcomes.append((appointment, patient_id, row_id, "new"))
            else:
                if changes:
                    entries.append(
                        sync_audit.changed(ctx, patient_id, row_id, appointment.id, changes, now)
                    )
                else:
                    entries.append(sync_audit.arrived(ctx, patient_id, row_id, appointment.id, now))
                outcomes.append((appointment, patient_id, row_id, "updated"))
        sync_audit.record(conn, entries)
        return outcomes

    @staticmethod
    def _upsert(conn: Connection) -> Any:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(APPOINTMENTS)
        changed = [*_FROM_INTAKEQ, "deleted_at", "updated_at", "last_synced_at"]
        stored, incoming = APPOINTMENTS.c.intakeq_last_modified, statement.excluded
        return statement.on_conflict_do_update(
            index_elements=[APPOINTMENTS.c.pq_appointment_id],
            set_={name: statement.excluded[name] for name in changed},
            where=or_(
                stored.is_(None),
                incoming.intakeq_last_modified.is_(None),
                incoming.intakeq_last_modified >= stored,
            ),
        ).returning(APPOINTMENTS.c.pq_appointment_id, APPOINTMENTS.c.id)

    @staticmethod
    def _row_values(
        ctx: RunContext, appointment: Appointment, patient_id: uuid.UUID
    ) -> dict[str, Any]:
        """The columns IntakeQ's record sets (a listed record is live: deleted_at None)."""
        return row_values(ctx.lookups, appointment, patient_id)

    @staticmethod
    def _count(
        ctx: RunContext,
        appointment: Appointment,
        patient_id: uuid.UUID,
        row_id: uuid.UUID,
        action: str,
    ) -> None:
        """Count what a write did to one appointment (and list it, in a patient's run)."""
        result = ctx.results.get(patient_id)
        if result is None:
            return  # moved to a patient outside this run
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
                    # The mapped provider, else IntakeQ's name for the practitioner.
                    provider_name=ctx.lookups.provider_name(appointment.practitioner_id)
                    or appointment.practitioner_name,
                    status=map_status(appointment.status),
                    action=action,
                )
            )


def _newer(stored: datetime | None, incoming: datetime | None) -> bool:
    """Whether the stored row's IntakeQ LastModified is later than the incoming record's."""
    return stored is not None and incoming is not None and stored > incoming


def row_values(lookups: Lookups, appointment: Appointment, patient_id: uuid.UUID) -> dict[str, Any]:
    """The stored columns IntakeQ's record calls for, as a sync writes them (and as
    `pqsync verify` expects them)."""
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


def _count_client(counts: dict[str, int], client_id: str) -> None:
    """One more skipped appointment of an unknown client (at most MAX_LISTED clients named)."""
    if client_id in counts or len(counts) < MAX_LISTED:
        counts[client_id] = counts.get(client_id, 0) + 1
