"""Soft deletion, only on proof from IntakeQ.

Proof is one of: IntakeQ lists the appointment under `deletedOnly`; `GET /appointments/{id}`
answers 404; or the appointment is absent from a complete fetch *and* that 404 confirms it.
Absence alone proves nothing: IntakeQ's offset pages shift when a record above them goes
(a 50-page fetch takes five minutes at 10 requests a minute), and another run may have
stored a row after this one began. So a complete fetch only names candidates: live rows of
the run's patients in the window (judged in the practice's zone, the one IntakeQ reads
dates in), written before the run began and not returned by it. Each is re-checked by id,
up to `RECHECK_LIMIT` a run over all its patients: one request each, where confirming by a
second full fetch would cost the whole window's pages again (or leave the deletion to the
next run). What comes back is written as it is now (moved out of the window, moved to
another client); the rest wait for the next run, which ends `partial` saying so.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from pqsync.db.engine import begin_write
from pqsync.db.provider_names import shown_provider_name
from pqsync.db.tables import Appointment as AppointmentRow
from pqsync.domain.windows import Window
from pqsync.intakeq.models import Appointment
from pqsync.services.sync import audit as sync_audit
from pqsync.services.sync.context import RunContext
from pqsync.services.sync.results import SyncedAppointment
from pqsync.services.sync.writer import AppointmentWriter

# Re-checks by id one run may spend (a request each); the rest wait for the next run.
RECHECK_LIMIT = 25
# Up to this many patients, the deletion scan filters by patient in SQL (the nightly's
# thousands are filtered as they stream).
PATIENTS_IN_SQL = 500


class ById(Protocol):
    def get_appointment(self, appointment_id: str) -> Appointment | None: ...


class Deletions:
    def __init__(
        self, writer: AppointmentWriter, source: ById, clock: Callable[[], datetime]
    ) -> None:
        self.writer = writer
        self.source = source
        self.clock = clock

    def absent_from_complete_fetch(
        self,
        session: Session,
        ctx: RunContext,
        patient_ids: Iterable[uuid.UUID],
        window: Window,
    ) -> None:
        """After a complete fetch of `window` for these patients: re-check by id what it did
        not return, and soft-delete what IntakeQ answers 404 for."""
        candidates = self.candidates(session, ctx, patient_ids, window)
        self.recheck(session, ctx, list(candidates), owners=candidates)

    def candidates(
        self,
        session: Session,
        ctx: RunContext,
        patient_ids: Iterable[uuid.UUID],
        window: Window,
    ) -> dict[str, uuid.UUID]:
        """After a complete fetch of `window` for these patients: what it did not return
        (live rows of theirs in the window, stored before the run began), by IntakeQ Id,
        with the patient each is stored for, earliest first."""
        start, end = window.bounds(ctx.practice_zone)
        wanted = list(patient_ids)
        statement = select(AppointmentRow.pq_appointment_id, AppointmentRow.patient_id).where(
            AppointmentRow.deleted_at.is_(None),
            AppointmentRow.start_time >= start,
            AppointmentRow.start_time < end,
            # Written after this run began (by another run): not for this fetch to judge.
            AppointmentRow.created_at <= ctx.started_at,
            AppointmentRow.updated_at <= ctx.started_at,
        )
        if len(wanted) <= PATIENTS_IN_SQL:
            statement = statement.where(AppointmentRow.patient_id.in_(wanted))
        stored = session.execute(
            statement.order_by(AppointmentRow.start_time).execution_options(yield_per=5000)
        )
        chosen = set(wanted)
        candidates = {
            pq_id: patient
            for pq_id, patient in stored
            if patient in chosen and pq_id not in ctx.fetched_ids
        }
        session.commit()
        return candidates

    def recheck(
        self,
        session: Session,
        ctx: RunContext,
        pq_ids: list[str],
        proof: str = "absent from a complete fetch, 404 by id",
        *,
        owners: dict[str, uuid.UUID] | None = None,
    ) -> None:
        """`GET /appointments/{id}` for each, within the run's re-check budget (one request
        each, `RECHECK_LIMIT` a run): a 404 deletes it, an answer is written as it is now
        (the writer moves it to its owner, or off our patient's page when it is now a
        client's who is not our patient). What the budget leaves makes its patients'
        data incomplete for this run."""
        allowed = ctx.rechecks_allowed()
        checked, waiting = pq_ids[:allowed], pq_ids[allowed:]
        ctx.rechecks_left -= len(checked)
        if waiting:
            ctx.warn(
                f"{len(waiting)} appointment(s) absent from the fetch were not re-checked "
                f"this run (at most {RECHECK_LIMIT} a run, within the requests it promised); "
                "they stay until a sync proves them deleted"
            )
            reason = (
                "some of this patient's appointments are no longer listed by IntakeQ and "
                "could not all be checked this run; they may be out of date until the next sync"
            )
            for pq_id in waiting:
                ctx.incomplete(owners.get(pq_id) if owners else None, reason)
        gone: list[str] = []
        for pq_id in checked:
            found = self.source.get_appointment(pq_id)
            if found is None:
                gone.append(pq_id)
            else:
                self.writer.write_page(session, ctx, [found])
        self.soft_delete(session, ctx, gone, proof)

    def soft_delete(self, session: Session, ctx: RunContext, pq_ids: list[str], proof: str) -> None:
        """Mark these appointments deleted (kept for history), audit each, count them."""
        ctx.known_deleted.update(pq_ids)  # what IntakeQ had deleted when the run read it
        if not pq_ids:
            return
        now = self.clock()
        try:
            begin_write(session)
            ctx.check_lease(session.connection())
            rows = list(
                session.scalars(
                    select(AppointmentRow).where(
                        AppointmentRow.pq_appointment_id.in_(pq_ids),
                        AppointmentRow.deleted_at.is_(None),
                    )
                )
            )
            entries = []
            for row in rows:
                row.deleted_at = now
                row.updated_at = now
                entries.append(
                    sync_audit.deleted(
                        ctx, row.patient_id, row.id, row.pq_appointment_id, proof, now
                    )
                )
            session.flush()
            sync_audit.record(session.connection(), entries)
            session.commit()
        except BaseException:
            session.rollback()
            raise
        for row in rows:
            self._count(ctx, row)

    @staticmethod
    def _count(ctx: RunContext, row: AppointmentRow) -> None:
        result = ctx.results.get(row.patient_id)
        if result is None:
            return
        result.summary.deleted += 1
        if ctx.keep_appointments:
            result.appointments.append(
                SyncedAppointment(
                    id=row.id,
                    pq_appointment_id=row.pq_appointment_id,
                    start_time=row.start_time,
                    provider_name=shown_provider_name(
                        ctx.lookups.provider_names.get(row.provider_id)
                        if row.provider_id
                        else None,
                        row.extra,
                    ),
                    status=row.status,
                    action="deleted",
                )
            )
