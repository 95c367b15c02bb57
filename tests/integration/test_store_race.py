"""Two runs writing the same appointments: each is stored once, audited once, and as
IntakeQ holds it (a page fetched earlier never replaces a newer version)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, time, timedelta

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from intakeq_sim import ManualClock, SimulatorServer
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
    clock: ManualClock,
) -> None:
    window = Window(*sim.dataset.default_window())
    fsh = {c.client_id: c for c in sim.dataset.fsh_patients}
    listed = sim.dataset.appointments_in_window(window.start, window.end)
    # A patient with appointments on the organisation's first page and on its later ones.
    on_first = {a.client_id: a for a in listed[:100] if a.client_id in fsh}
    later = next(a for a in listed[150:] if a.client_id in on_first)
    patient = fsh[later.client_id]
    changed = on_first[later.client_id].id
    raced: list[SyncResult] = []

    def patient_run() -> None:
        # Page 1 was fetched (not yet written) when IntakeQ changes one of its records and
        # a patient run stores the newer version: page 1 must not overwrite it.
        clock.advance(timedelta(seconds=1))  # well inside the run's lease
        sim.app.store.cancel(changed, "raced")
        email = patient.directory_email or patient.email
        worker = threading.Thread(
            target=lambda: raced.append(service.sync_patient(email, window=window))
        )
        worker.start()
        worker.join()

    hooks.after_page["1"] = patient_run
    result = hooked.sync_organization("first-step-house", window=window)

    # IntakeQ changed a record the org run had read: it may not say `success`.
    assert result.status == "partial", result.error
    assert any("PracticeQ changed while we were reading it" in r for r in result.incomplete)
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
    # What we store is what IntakeQ holds, field by field, the raced record included.
    with Session(pq.engine) as session:
        rows = {a.pq_appointment_id: a for a in session.scalars(select(Appointment))}
    truth = {r["Id"]: r for r in sim.app.store.snapshot(include_deleted=False)}
    for pq_id, row in rows.items():
        record = truth[pq_id]
        assert row.intakeq_status == record["Status"], pq_id
        assert int(row.start_time.timestamp() * 1000) == record["StartDate"], pq_id
        assert row.intakeq_client_id == record["ClientId"], pq_id
        assert row.intakeq_last_modified is not None
        assert int(row.intakeq_last_modified.timestamp() * 1000) == record["LastModified"], pq_id
    assert rows[changed].intakeq_status == "Canceled"
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
