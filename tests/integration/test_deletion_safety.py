"""A live IntakeQ appointment is never soft-deleted here: the four ways it used to happen.

Each test runs a real sync against the simulator on loopback and changes IntakeQ at the
moment a real practice would: between the pages of a long fetch (the client's transport
calls a hook after a page's answer, as IntakeQ's other users act while we read).
"""

from __future__ import annotations

import threading
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from intakeq_sim import ManualClock, SimulatorServer
from page_hooks import PageHooks
from pqsync.bootstrap import App
from pqsync.db.tables import Appointment, Organization
from pqsync.domain.windows import Window
from pqsync.services.sync import SyncService
from provider_side import book_at

DENVER = ZoneInfo("America/Denver")
ORG = "first-step-house"


def live_ids(pq: App) -> set[str]:
    with Session(pq.engine) as session:
        return set(
            session.scalars(
                select(Appointment.pq_appointment_id).where(Appointment.deleted_at.is_(None))
            )
        )


def book(sim: SimulatorServer, client_id: int, day_offset: int, at: time) -> str:
    """A provider books an appointment in IntakeQ (Denver local time)."""
    ds = sim.dataset
    start = datetime.combine(ds.today + timedelta(days=day_offset), at, tzinfo=DENVER)
    return book_at(sim, client_id, start)


def test_an_appointment_stored_by_another_run_during_a_window_fetch_stays(
    hooked: SyncService, service: SyncService, sim: SimulatorServer, pq: App, hooks: PageHooks
) -> None:
    patient = sim.dataset.special.plus_address
    booked: list[str] = []

    def meanwhile() -> None:
        # After the organisation's first (latest) page: a follow-up is booked at the top of
        # the list and a patient run (the button, a webhook) stores it before we finish.
        booked.append(book(sim, patient.client_id, 85, time(10, 0)))
        worker = threading.Thread(target=service.sync_patient, args=(patient.directory_email,))
        worker.start()
        worker.join()

    hooks.after_page["1"] = meanwhile
    result = hooked.sync_organization(ORG)
    assert result.plan == "window" and result.status == "success"
    assert booked and booked[0] in live_ids(pq)


def test_a_record_shifted_between_pages_is_not_deleted(
    hooked: SyncService, sim: SimulatorServer, pq: App, hooks: PageHooks
) -> None:
    start, end = sim.dataset.default_window()
    listed = sim.dataset.appointments_in_window(start, end)  # IntakeQ's order, newest first
    assert len(listed) > 200, "the window must span several pages"
    on_page_one = listed[50].id
    shifted = listed[100].id  # first of page 2: moves to page 1 once one above it goes
    # Both are our patient's: the provider books them on Austin (a move keeps the order).
    austin = sim.dataset.special.plus_address.client_id
    for pq_id in (on_page_one, shifted):
        moved = httpx.post(
            f"{sim.control_url}/appointments/{pq_id}/client", json={"ClientId": austin}
        )
        moved.raise_for_status()
    assert hooked.sync_organization(ORG).status == "success"
    before = live_ids(pq)
    assert {on_page_one, shifted} <= before  # the preconditions the test rests on

    hooks.after_page["1"] = lambda: sim.app.store.delete(on_page_one)
    result = hooked.sync_organization(ORG)
    # IntakeQ changed while we read it: the run says so instead of `success`.
    assert result.status == "partial"
    assert any("PracticeQ changed while we were reading it" in r for r in result.incomplete)
    live = live_ids(pq)
    fsh = {c.client_id for c in sim.dataset.fsh_patients}
    still_there = {a.id for a in sim.dataset.appointments_in_window(start, end, fsh)}
    # Nothing IntakeQ still holds was deleted here, the shifted record included.
    assert still_there <= live
    assert shifted in live
    # What IntakeQ deleted after we read its page goes with the next run (proved by a 404).
    assert on_page_one in live
    assert hooked.sync_organization(ORG).status == "success"
    assert on_page_one not in live_ids(pq)


def test_an_organisation_in_another_zone_keeps_appointments_on_the_windows_edge(
    service: SyncService, sim: SimulatorServer, pq: App, clock: ManualClock
) -> None:
    with Session(pq.engine) as session:
        session.execute(
            update(Organization).where(Organization.slug == ORG).values(timezone="America/New_York")
        )
        session.commit()
        org = session.scalars(select(Organization).where(Organization.slug == ORG)).one()
        window = service.organization_window(org)
    # 23:00 in Denver the evening before the window's first day: 01:00 of that day in
    # New York, outside what IntakeQ returns for startDate (read in Denver).
    edge_day = window.start - timedelta(days=1)
    patient = sim.dataset.special.plus_address
    edge = book(sim, patient.client_id, (edge_day - sim.dataset.today).days, time(23, 0))
    wide = Window(edge_day - timedelta(days=1), window.end)
    assert service.sync_patient(patient.directory_email or "", window=wide).ok
    assert edge in live_ids(pq)

    result = service.sync_organization(ORG)
    assert result.status == "success"
    assert edge in live_ids(pq)


def test_a_patient_whose_email_changed_in_intakeq_keeps_their_appointments(
    service: SyncService, sim: SimulatorServer, pq: App
) -> None:
    ann = sim.dataset.special.email_substring
    first = service.sync_patient(ann.directory_email or "")
    assert first.status == "success" and first.summary.new > 0
    before = live_ids(pq)

    # Ann's email changes in IntakeQ; ours still says ann@. `client=ann@` now returns
    # Joann's and Suzann's appointments (a partial match) and none of Ann's.
    sim.app.store.change_client_email(ann.client_id, "ann.lee@mail.example")
    result = service.sync_patient(ann.directory_email or "")
    assert result.summary.deleted == 0
    assert live_ids(pq) == before
    assert any("incomplete" in w for w in result.warnings), result.warnings
    # The fetch relied on was incomplete: the run says so.
    assert result.status == "partial"
