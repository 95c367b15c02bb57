"""Sync all promises at most N requests, and the run keeps that promise: when the practice
has grown since its size was learned, the run stops at the promised count, says plainly that
it is incomplete, stamps nobody and deletes nothing; the next estimate is right again.

The requests are counted by the simulator (what IntakeQ received), the promise is what the
Sync all dialog shows."""

from __future__ import annotations

import uuid
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from intakeq_sim import ManualClock, SimulatorServer
from pqsync.bootstrap import App
from pqsync.db.tables import Affiliation, Appointment, Organization, SyncState
from pqsync.services.sync import SyncService
from pqsync.services.sync.plan import PRACTICE_DENSITY
from pqsync.services.sync_all_plan import sync_all_plan
from provider_side import book_at

ORG = "first-step-house"
DENVER = ZoneInfo("America/Denver")


def promised(service: SyncService, pq: App) -> int:
    """At most how many requests the Sync all dialog says the run takes."""
    with Session(pq.engine) as session:
        org = session.scalars(select(Organization).where(Organization.slug == ORG)).one()
        plan = sync_all_plan(
            service,
            session,
            org,
            pq.budget_usage(),
            minute_limit=pq.settings.intakeq_minute_limit,
            minute_window_seconds=pq.settings.intakeq_minute_window_seconds,
        )
    return plan.requests


def requests_received(sim: SimulatorServer) -> int:
    return int(sim.stats()["requests"])


def grow(sim: SimulatorServer, appointments: int) -> None:
    """The practice takes on a busy client who is not ours (whose name and email no
    patient's `client` query matches): `appointments` more over the whole window, about a
    page per hundred."""
    ds = sim.dataset
    stranger = next(c for c in ds.clients if c.email == "peter.grant@mail.example")
    for n in range(appointments):
        start = datetime.combine(ds.today, time(8), DENVER) + timedelta(days=n % 170 - 85)
        book_at(sim, stranger.client_id, start)


def large_practice(pq: App, clock: ManualClock) -> None:
    """pqsync knows the practice as a large one: one query per patient is the cheaper plan."""
    with Session(pq.engine) as session:
        session.merge(
            SyncState(name=PRACTICE_DENSITY, value={"per_day": 500.0}, updated_at=clock())
        )
        session.commit()


def live_ids(pq: App) -> set[str]:
    with Session(pq.engine) as session:
        return set(
            session.scalars(
                select(Appointment.pq_appointment_id).where(Appointment.deleted_at.is_(None))
            )
        )


def stamps(pq: App) -> dict[uuid.UUID, datetime | None]:
    with Session(pq.engine) as session:
        rows = session.execute(
            select(Affiliation.patient_id, Affiliation.last_practiceq_sync_at)
        ).all()
    return {patient_id: stamped for patient_id, stamped in rows}


def ours_in_intakeq(sim: SimulatorServer) -> set[str]:
    fsh = {c.client_id for c in sim.dataset.fsh_patients}
    start, end = sim.dataset.default_window()
    return {a.id for a in sim.dataset.appointments_in_window(start, end, fsh)}


def test_a_practice_grown_since_its_size_was_learned_never_costs_more_than_promised(
    service: SyncService, sim: SimulatorServer, pq: App, clock: ManualClock
) -> None:
    first = service.sync_organization(ORG)
    assert (first.status, first.plan) == ("success", "window")  # the practice's size learned
    stored_before = live_ids(pq)
    stamped_before = stamps(pq)
    clock.advance(timedelta(minutes=30))
    grow(sim, 6000)
    promise = promised(service, pq)
    sent_before = requests_received(sim)

    result = service.sync_organization(ORG)

    spent = requests_received(sim) - sent_before
    assert spent <= promise, (spent, promise)
    assert result.requests_made == spent
    assert result.status == "partial"
    (reason,) = result.incomplete
    assert reason.startswith("PracticeQ has more appointments than expected; ")
    assert reason.endswith(" pages were not read — run Sync all again")
    # Nothing lost, nobody said to be synced by an incomplete read.
    assert result.summary.deleted == 0
    assert stored_before <= live_ids(pq)
    assert stamps(pq) == stamped_before

    # What the run learned makes the next promise right: it is kept, and complete.
    clock.advance(timedelta(minutes=30))
    promise = promised(service, pq)
    sent_before = requests_received(sim)
    again = service.sync_organization(ORG)
    assert again.status == "success", (again.error, again.plan, again.incomplete)
    assert requests_received(sim) - sent_before <= promise
    assert live_ids(pq) == ours_in_intakeq(sim)
    assert all(stamped is not None for stamped in stamps(pq).values())


def test_a_window_fetch_that_fits_its_promise_is_complete_and_kept_inside_it(
    service: SyncService, sim: SimulatorServer, pq: App, clock: ManualClock
) -> None:
    assert service.sync_organization(ORG).status == "success"
    clock.advance(timedelta(minutes=30))
    grow(sim, 150)  # grown, but by less than the promise leaves room for
    promise = promised(service, pq)
    sent_before = requests_received(sim)

    result = service.sync_organization(ORG)

    assert result.status == "success", result.incomplete
    assert requests_received(sim) - sent_before <= promise
    assert live_ids(pq) == ours_in_intakeq(sim)


def test_patient_by_patient_the_run_stops_at_its_promise_and_says_who_is_incomplete(
    service: SyncService, sim: SimulatorServer, pq: App, clock: ManualClock
) -> None:
    assert service.sync_organization(ORG).status == "success"
    large_practice(pq, clock)
    stored_before = live_ids(pq)
    stamped_before = stamps(pq)
    ds = sim.dataset
    for client in ds.fsh_patients:  # every patient's bookings grow by about four pages
        for n in range(320):
            start = datetime.combine(ds.today, time(6), DENVER) + timedelta(days=n % 170 - 85)
            book_at(sim, client.client_id, start + timedelta(minutes=n // 170))
    clock.advance(timedelta(minutes=30))
    promise = promised(service, pq)
    sent_before = requests_received(sim)

    result = service.sync_organization(ORG)

    assert result.plan == "per_patient"
    assert requests_received(sim) - sent_before <= promise
    assert result.status == "partial"
    assert any(
        r.startswith("PracticeQ has more appointments than expected") for r in result.incomplete
    )
    assert result.summary.deleted == 0
    assert stored_before <= live_ids(pq)
    now = stamps(pq)
    complete = {p.patient_id for p in result.patients if not p.incomplete}
    incomplete = {p.patient_id for p in result.patients if p.incomplete}
    assert incomplete  # somebody's pages were not all read: not stamped
    assert all(now[p] == stamped_before[p] for p in incomplete)
    assert all(now[p] != stamped_before[p] for p in complete)


def test_patients_holding_more_than_a_page_are_checked_inside_the_promise(
    service: SyncService, sim: SimulatorServer, pq: App, clock: ManualClock
) -> None:
    """Patient by patient, a patient whose own listing takes two pages is checked for
    changes between them (two listings more): a quiet run stays inside what Sync all
    promised and, nothing having changed, is complete."""
    assert service.sync_organization(ORG).status == "success"
    large_practice(pq, clock)
    ds = sim.dataset
    for client in ds.fsh_patients[:3]:  # three patients now hold two pages each
        for n in range(150):
            start = datetime.combine(ds.today, time(6), DENVER) + timedelta(days=n % 170 - 85)
            book_at(sim, client.client_id, start)
    clock.advance(timedelta(minutes=30))
    first = service.sync_organization(ORG)  # learns what each patient holds
    assert first.plan == "per_patient"
    assert first.status == "success", first.incomplete
    clock.advance(timedelta(minutes=30))
    promise = promised(service, pq)
    sent_before = requests_received(sim)

    result = service.sync_organization(ORG)

    spent = requests_received(sim) - sent_before
    assert result.plan == "per_patient"
    assert result.status == "success", (result.incomplete, result.warnings)
    assert spent <= promise, (spent, promise)
    assert live_ids(pq) == ours_in_intakeq(sim)
