"""Two runs writing the same appointments: each is stored once and audited once."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, time, timedelta

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from intakeq_sim import SimulatorServer
from page_hooks import PageHooks
from pqsync.bootstrap import App
from pqsync.db.tables import Appointment, PatientActivity
from pqsync.domain.windows import Window
from pqsync.services.sync import SyncResult, SyncService


def test_a_patient_run_storing_appointments_during_an_org_run_leaves_each_stored_once(
    hooked: SyncService,
    service: SyncService,
    hooks: PageHooks,
    sim: SimulatorServer,
    pq: App,
) -> None:
    window = Window(*sim.dataset.default_window())
    fsh = {c.client_id: c for c in sim.dataset.fsh_patients}
    listed = sim.dataset.appointments_in_window(window.start, window.end)
    # A patient whose appointments lie on the organisation's later pages.
    later = next(a for a in listed[150:] if a.client_id in fsh)
    patient = fsh[later.client_id]
    raced: list[SyncResult] = []

    def patient_run() -> None:
        email = patient.directory_email or patient.email
        worker = threading.Thread(
            target=lambda: raced.append(service.sync_patient(email, window=window))
        )
        worker.start()
        worker.join()

    hooks.after_page["1"] = patient_run
    result = hooked.sync_organization("first-step-house", window=window)

    assert result.status == "success", result.error
    (patient_result,) = raced
    assert patient_result.status == "success", patient_result.error
    ours = {a.id for a in listed if a.client_id in fsh}
    with Session(pq.engine) as session:
        stored = list(session.scalars(select(Appointment.pq_appointment_id)))
        created = session.execute(
            select(PatientActivity.appointment_id, func.count())
            .filter_by(activity_type="appointment_created")
            .group_by(PatientActivity.appointment_id)
        ).all()
    assert sorted(stored) == sorted(ours)
    assert len(created) == len(stored) and {n for _, n in created} == {1}
    # Each appointment was new to exactly one of the two runs.
    assert result.summary.new + patient_result.summary.new == len(stored)


def test_an_appointment_rescheduled_into_another_window_is_updated_in_place(
    service: SyncService, sim: SimulatorServer, pq: App
) -> None:
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

    result = service.sync_organization("first-step-house", window=later)

    assert result.status == "success", result.error
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
