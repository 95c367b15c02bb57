"""Rows another run stores while ours is writing the same appointments: they keep their ids,
and our audit entries and results point at them."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Connection, Dialect, Engine, func, select
from sqlalchemy.orm import Session

from pqsync.bootstrap import App
from pqsync.db.bulk import KeyedSelect
from pqsync.db.tables import Appointment, PatientActivity
from pqsync.domain.windows import Window
from pqsync.intakeq.models import Appointment as IntakeQAppointment
from pqsync.intakeq.models import AppointmentQuery
from pqsync.intakeq.simulator import SimulatorServer
from pqsync.services.sync import SyncService
from pqsync.services.sync_store import AppointmentStore, RunContext, StagedPage
from pqsync.services.sync_types import SyncResult


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


def test_a_patient_run_storing_part_of_a_page_before_the_org_run_writes_it_counts_once(
    service: SyncService, sim: SimulatorServer, pq: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The organisation's run matched its second page, found none of it stored and is about
    to write it by plain inserts; a patient's run stores that patient's appointments first.
    The page is still written (the clashing rows the careful way), and every appointment is
    stored and audited once."""
    window = Window(*sim.dataset.default_window())
    query = AppointmentQuery(start_date=window.start, end_date=window.end)
    pages = list(pq.intakeq.appointment_pages(query))
    fsh = {c.client_id: c for c in sim.dataset.fsh_patients}
    mine = [
        [r for r in p if isinstance(r, IntakeQAppointment) and r.client_id in fsh] for p in pages
    ]
    ours = {r.id for page in mine for r in page}
    target = mine[1][0]
    patient = fsh[target.client_id]

    commit_page = service.store.commit_page
    raced: list[SyncResult] = []
    racing = False

    def patient_run_first(session: Session, ctx: RunContext, staged: StagedPage) -> None:
        nonlocal racing
        if not racing and any(i.appointment.id == target.id for i in staged.items):
            racing = True  # the patient's run writes its own pages through here too
            email = patient.directory_email or patient.email
            raced.append(service.sync_patient(email, window=window))
        commit_page(session, ctx, staged)

    monkeypatch.setattr(service.store, "commit_page", patient_run_first)
    result = service.sync_organization("first-step-house", window=window)

    assert result.status == "success", result.error
    (patient_run,) = raced
    assert patient_run.status == "success", patient_run.error
    with Session(pq.engine) as session:
        stored = set(session.scalars(select(Appointment.pq_appointment_id)))
        created = session.execute(
            select(PatientActivity.appointment_id, func.count())
            .filter_by(activity_type="appointment_created")
            .group_by(PatientActivity.appointment_id)
        ).all()
    assert stored == ours
    assert len(created) == len(stored) and {n for _, n in created} == {1}
    # Each appointment is new to exactly one of the two runs; the rest of the patient's
    # appointments on the page are unchanged to the organisation's run.
    assert result.summary.new + patient_run.summary.new == len(stored)
    assert result.summary.unchanged >= 1


def test_a_first_sync_of_a_window_stores_an_appointment_moved_in_from_outside_it_once(
    service: SyncService, sim: SimulatorServer, pq: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A window nothing is stored in is synced without reading its pages' stored rows; an
    appointment stored earlier outside it and rescheduled into it is then found by its
    clash, updated in place and counted once."""
    fsh = {c.client_id for c in sim.dataset.fsh_patients}
    today = sim.dataset.today
    earlier = Window(today, today + timedelta(days=14))
    later = Window(today + timedelta(days=30), today + timedelta(days=75))
    service.sync_organization("first-step-house", window=earlier)
    with Session(pq.engine) as session:
        before = {a.pq_appointment_id: a.id for a in session.scalars(select(Appointment))}
    moved = sorted(before)[0]
    new_start = datetime.combine(later.start + timedelta(days=3), time(15), UTC)
    response = httpx.patch(
        f"{sim.control_url}/appointments/{moved}",
        json={"StartDateIso": new_start.strftime("%Y-%m-%dT%H:%M:%S.0000000Z")},
    )
    response.raise_for_status()
    truth = {a.id for a in sim.dataset.appointments_in_window(later.start, later.end, fsh)}
    assert moved in truth and not truth & (set(before) - {moved})
    query = AppointmentQuery(start_date=later.start, end_date=later.end)
    pages = len(list(pq.intakeq.appointment_pages(query)))
    assert pages >= 2
    reads: list[int] = []
    stored_ids = service.store._stored_ids
    monkeypatch.setattr(
        service.store, "_stored_ids", lambda ids: reads.append(len(ids)) or stored_ids(ids)
    )

    result = service.sync_organization("first-step-house", window=later)

    assert result.status == "success", result.error
    assert len(reads) < pages  # pages were presumed fresh until the clash
    assert (result.summary.new, result.summary.updated) == (len(truth) - 1, 1)
    with Session(pq.engine) as session:
        after = {a.pq_appointment_id: a for a in session.scalars(select(Appointment))}
        kinds = session.execute(
            select(PatientActivity.activity_type, func.count())
            .filter_by(sync_log_id=result.run_id)
            .group_by(PatientActivity.activity_type)
        ).all()
    assert set(after) == set(before) | truth
    assert after[moved].id == before[moved] and after[moved].start_time == new_start
    assert dict(kinds) == {"appointment_created": len(truth) - 1, "appointment_updated": 1}
