"""Faults found beside the deletion ones: leases, fields never updated, request counts
shared between runs, paging without end. Real simulator on loopback, real database."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from intakeq_sim import ManualClock, SimulatorServer
from pqsync.bootstrap import App
from pqsync.db.tables import Appointment, PatientActivity, SyncLock, SyncLog
from pqsync.domain.windows import Window
from pqsync.intakeq.budget import MemoryBudget
from pqsync.intakeq.client import IntakeQClient
from pqsync.services.sync import SyncService
from pqsync.services.sync.locks import SyncInProgress, SyncLocks
from pqsync.settings import SIMULATOR_API_KEY

ORG = "first-step-house"


def real_clock() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
def real_time_client(sim: SimulatorServer) -> Iterator[IntakeQClient]:
    budget = MemoryBudget(minute_limit=100_000, daily_limit=100_000)
    with IntakeQClient(sim.base_url, SIMULATOR_API_KEY, budget=budget) as client:
        yield client


def test_a_run_keeps_its_lease_while_it_waits_for_intakeq(
    pq: App, sim: SimulatorServer, real_time_client: IntakeQClient
) -> None:
    lease = timedelta(seconds=1)
    service = SyncService(
        pq.engine,
        real_time_client,
        clock=real_clock,
        locks=SyncLocks(pq.engine, real_clock, lease=lease),
    )
    sim.configure(latency_ms=1500)  # every answer takes longer than the whole lease
    prepared = service.prepare_organization(ORG, window=Window(*sim.dataset.default_window()))
    runner = threading.Thread(target=service.run, args=(prepared,))
    runner.start()
    try:
        time.sleep(2.5)  # the first page's answer is still on its way, or just in
        with pytest.raises(SyncInProgress) as caught:
            service.prepare_organization(ORG)
        assert caught.value.run_id == prepared.run_id
    finally:
        runner.join()
    with Session(pq.engine) as session:
        log = session.get(SyncLog, prepared.run_id)
        assert log is not None and log.status == "success"


def test_a_run_that_loses_its_lease_stops_writing_and_fails(
    pq: App, sim: SimulatorServer, clock: ManualClock, service: SyncService
) -> None:
    prepared = service.prepare_organization(ORG)
    # Another worker takes the scope over (as it would once the lease had lapsed).
    with Session(pq.engine) as session:
        session.execute(
            update(SyncLock)
            .where(SyncLock.run_id == prepared.run_id)
            .values(run_id=prepared.run_id.__class__(int=1), holder="another-worker")
        )
        session.commit()
    result = service.run(prepared)
    assert result.status == "failed"
    assert result.error is not None and "lease" in result.error
    with Session(pq.engine) as session:
        stored = session.scalar(select(func.count()).select_from(Appointment))
        log = session.get(SyncLog, prepared.run_id)
    assert stored == 0
    assert log is not None and log.status == "failed"


def test_a_change_only_to_fields_not_compared_before_is_stored_and_audited(
    service: SyncService, sim: SimulatorServer, pq: App, clock: ManualClock
) -> None:
    ann = sim.dataset.special.email_substring
    email = ann.directory_email or ""
    assert service.sync_patient(email).ok
    start, end = sim.dataset.default_window()
    target = next(
        a.id
        for a in sim.dataset.appointments_in_window(start, end, {ann.client_id})
        if a.status == "Confirmed"
    )
    sim.app.store.cancel(target, "feeling unwell")
    assert service.sync_patient(email).summary.updated == 1
    clock.advance(timedelta(minutes=5))
    # Only IntakeQ's LastModified (and the reason) changes now: the status was Canceled already.
    sim.app.store.cancel(target, "moved out of state")
    result = service.sync_patient(email)
    assert result.summary.updated == 1
    with Session(pq.engine) as session:
        row = session.scalars(select(Appointment).filter_by(pq_appointment_id=target)).one()
        entries = list(
            session.scalars(
                select(PatientActivity.description).where(
                    PatientActivity.appointment_id == row.id,
                    PatientActivity.sync_log_id == result.run_id,
                )
            )
        )
    # The reason itself is not kept (minimum necessary); IntakeQ's LastModified is.
    assert row.intakeq_last_modified == clock()
    assert len(entries) == 1 and "intakeq_last_modified" in entries[0]


def test_each_runs_request_count_is_its_own_when_runs_overlap(
    service: SyncService, sim: SimulatorServer, pq: App
) -> None:
    sim.configure(latency_ms=300)
    patients = [sim.dataset.special.plus_address, sim.dataset.special.email_superstring]
    results = {}

    def sync(email: str) -> None:
        results[email] = service.sync_patient(email)

    threads = [threading.Thread(target=sync, args=(p.directory_email or "",)) for p in patients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counts = [r.requests_made for r in results.values()]
    assert sum(counts) == sim.stats()["requests"]
    # Austin's ClientId is known (one page); Joann's is confirmed first (a question to
    # IntakeQ's client list, then one page).
    assert sorted(counts) == [1, 2]
    with Session(pq.engine) as session:
        logged = sorted(session.scalars(select(SyncLog.requests_made)))
    assert logged == [1, 2]


def test_a_server_that_ignores_page_fails_the_run_instead_of_spending_the_day(
    pq: App, sim: SimulatorServer, clock: ManualClock
) -> None:
    budget = MemoryBudget(minute_limit=100_000, daily_limit=60, clock=clock)
    with IntakeQClient(sim.base_url, SIMULATOR_API_KEY, budget=budget) as client:
        service = SyncService(pq.engine, client, clock=clock)
        sim.configure(ignore_page=True)
        heavy = sim.dataset.special.heavy
        result = service.sync_patient(heavy.directory_email or heavy.email)
    assert result.status == "failed"
    assert result.error is not None and "page" in result.error
    assert result.requests_made <= 5
    assert budget.usage().day_used <= 5
