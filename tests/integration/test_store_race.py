"""A row another run inserted between our diff and our upsert keeps its id, and our audit
entries and results point at it (the race PostgreSQL's READ COMMITTED allows)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Dialect, Engine, select
from sqlalchemy.orm import Session

from pqsync.db.bulk import KeyedSelect
from pqsync.db.tables import Appointment, PatientActivity
from pqsync.intakeq.simulator import SimulatorServer
from pqsync.services.sync import SyncService
from pqsync.services.sync_store import AppointmentStore


class _Blind(KeyedSelect):
    """Finds nothing: as if the rows were committed by another run just after our read."""

    def fetch(self, connection: Connection, keys: Any) -> list[tuple[Any, ...]]:
        return []


class RacingStore(AppointmentStore):
    def _keyed(self, dialect: Dialect, columns: tuple[str, ...]) -> KeyedSelect:
        real = super()._keyed(dialect, columns)
        blind = _Blind.__new__(_Blind)
        blind.__dict__.update(real.__dict__)
        return blind


def test_rows_inserted_by_a_concurrent_run_keep_their_ids_and_audit_points_at_them(
    service: SyncService, sim: SimulatorServer, engine: Engine
) -> None:
    patient = sim.dataset.special.heavy
    first = service.sync_patient(patient.directory_email or patient.email)
    with Session(engine) as session:
        ids = {a.pq_appointment_id: a.id for a in session.scalars(select(Appointment))}
    assert first.summary.new == len(ids) > 100

    service.store = RacingStore(engine, service.clock)
    second = service.sync_patient(patient.directory_email or patient.email)

    with Session(engine) as session:
        after = {a.pq_appointment_id: a.id for a in session.scalars(select(Appointment))}
        entries = session.scalars(
            select(PatientActivity).filter_by(sync_log_id=second.run_id)
        ).all()
    assert after == ids  # no row duplicated, no id changed
    assert second.summary.new == len(ids)  # it believed them new...
    assert {e.appointment_id for e in entries} == set(ids.values())  # ...but audits the kept
    (patient_result,) = second.patients
    assert {a.id for a in patient_result.appointments} == set(ids.values())
