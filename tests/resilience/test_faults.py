"""An organisation sync against a misbehaving IntakeQ: faults, 429s, broken records, no budget.

A real simulator on loopback and a real database (SQLite, and PostgreSQL in CI). The
simulator runs on a ManualClock that the client's and the budget's sleeps move forward,
so waits of seconds cost milliseconds and the simulator's rate window ages exactly as much
as we waited; only the client's read timeout (0.3 s a hang) passes in real time.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from intakeq_sim import (
    ManualClock,
    SimAppointment,
    SimConfig,
    SimulatorServer,
    demo_directory,
    malformed_kind,
)
from pqsync.bootstrap import App
from pqsync.db.tables import Appointment as AppointmentRow
from pqsync.db.tables import SyncLog
from pqsync.intakeq.budget import DatabaseBudget
from pqsync.intakeq.client import IntakeQClient
from pqsync.services.directory import DirectoryFile, import_directory
from pqsync.services.sync import SyncInProgress, SyncResult, SyncService
from pqsync.settings import SIMULATOR_API_KEY, Settings

NOW = datetime(2025, 10, 24, 16, 0, tzinfo=UTC)  # 10:00 in Denver
TODAY = date(2025, 10, 24)
ORG = "first-step-house"
PAGE = 100
# Seed 2 makes this run meet every fault kind and a 429 burst; the data follow the seed too.
FAULT_SEED = 2
DAILY_BUDGET = 40


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


Sleep = Callable[[float], None]


@pytest.fixture
def sleep(clock: ManualClock) -> Sleep:
    """Waits as long as asked on the simulator's clock, a few milliseconds in real time."""

    def sleep(seconds: float) -> None:
        clock.advance(timedelta(seconds=seconds))
        time.sleep(min(seconds, 0.01))

    return sleep


def start_sim(clock: ManualClock, config: SimConfig, seed: int = 1) -> SimulatorServer:
    return SimulatorServer(today=TODAY, seed=seed, clock=clock, config=config).start()


def import_demo_directory(engine: Engine, sim: SimulatorServer) -> None:
    import_directory(engine, DirectoryFile.model_validate(demo_directory(sim.dataset)))


def window_truth(sim: SimulatorServer) -> list[SimAppointment]:
    """Every live appointment of the practice in the default window, in listing order."""
    start, end = sim.dataset.default_window()
    return sim.dataset.appointments_in_window(start, end)


def fsh_ids(sim: SimulatorServer) -> set[int]:
    return {c.client_id for c in sim.dataset.fsh_patients}


def stored_rows(engine: Engine) -> dict[str, AppointmentRow]:
    with Session(engine) as session:
        query = select(AppointmentRow).where(AppointmentRow.deleted_at.is_(None))
        return {row.pq_appointment_id: row for row in session.scalars(query)}


def sync_log(engine: Engine, result: SyncResult) -> SyncLog:
    with Session(engine) as session:
        row = session.get(SyncLog, result.run_id)
        assert row is not None
        return row


def settled_stats(sim: SimulatorServer, expected_requests: int) -> dict[str, Any]:
    """The simulator's stats once it has recorded every request we sent.

    A hung request is only recorded when its hang ends, after our client gave up on it.
    """
    deadline = time.monotonic() + 10
    stats = sim.stats()
    while stats["requests"] < expected_requests and time.monotonic() < deadline:
        time.sleep(0.05)
        stats = sim.stats()
    return stats


def test_an_org_sync_through_faults_and_429s_stores_exactly_intakeqs_data_within_budget(
    engine: Engine, clock: ManualClock, sleep: Sleep
) -> None:
    config = SimConfig(
        fail_rate=0.3,
        fault_kinds=("error500", "hang", "drop"),
        hang_seconds=1.0,
        minute_limit=3,
        minute_window_seconds=2.0,
        daily_limit=None,
    )
    sim = start_sim(clock, config, seed=FAULT_SEED)
    try:
        import_demo_directory(engine, sim)
        # Our budget allows far more a minute than the simulator: its 429s must be survived.
        budget = DatabaseBudget(
            engine,
            SIMULATOR_API_KEY,
            minute_limit=1_000,
            daily_limit=DAILY_BUDGET,
            clock=clock,
            sleep=sleep,
        )
        client = IntakeQClient(
            sim.base_url,
            SIMULATOR_API_KEY,
            budget=budget,
            timeout=0.3,
            # A whole minute window of the simulator's: a 429 after that is its daily limit.
            rate_limit_wait=2.0,
            sleep=sleep,
            rng=random.Random(7),
        )
        with client:
            service = SyncService(engine, client, clock=clock)
            attempts = [service.sync_organization(ORG)]
            # Retries can run out on an unlucky streak; a re-run must still fit the budget.
            while not attempts[-1].ok and len(attempts) < 3:
                attempts.append(service.sync_organization(ORG))
            result = attempts[-1]
            stats = settled_stats(sim, client.requests_sent)
            day_used = budget.usage().day_used
            requests_sent = client.requests_sent
    finally:
        sim.stop()

    assert result.status == "success", result.error
    truth = [a for a in window_truth(sim) if a.client_id in fsh_ids(sim)]
    rows = stored_rows(engine)
    assert set(rows) == {a.id for a in truth}
    for appointment in truth:
        row = rows[appointment.id]
        assert (row.start_time, row.intakeq_status) == (appointment.start, appointment.status)
    assert {c.client_id for c in sim.dataset.fsh_patients} == {a.client_id for a in truth}
    assert len(sim.dataset.fsh_patients) == 12

    # The run really met every kind of fault and a 429 burst...
    assert all(count >= 1 for count in stats["faults"].values()), stats
    assert stats["rate_limited"] >= 2
    # ...and IntakeQ received exactly what we counted, never more than the budget allowed.
    assert stats["requests"] == requests_sent == day_used
    assert requests_sent <= DAILY_BUDGET
    assert sum(r.requests_made for r in attempts) == requests_sent


def test_each_malformed_record_is_one_error_and_the_rest_of_its_page_is_stored(
    engine: Engine, clock: ManualClock
) -> None:
    rate = 0.02
    sim = start_sim(clock, SimConfig(minute_limit=None, daily_limit=None, malformed_rate=rate))
    try:
        import_demo_directory(engine, sim)
        budget = DatabaseBudget(
            engine, SIMULATOR_API_KEY, minute_limit=1_000, daily_limit=1_000, clock=clock
        )
        with IntakeQClient(sim.base_url, SIMULATOR_API_KEY, budget=budget) as client:
            result = SyncService(engine, client, clock=clock).sync_organization(ORG)
        stats = sim.stats()
    finally:
        sim.stop()

    seed = sim.dataset.seed
    fetched = window_truth(sim)  # the window plan fetches the practice's whole window once
    kinds = {a.id: malformed_kind(seed, a.id, rate) for a in fetched}
    # `null_fields` records lose optional fields only: still usable, so not errors.
    unusable = {i for i, kind in kinds.items() if kind in ("missing_id", "null_start", "bad_date")}
    fsh = fsh_ids(sim)
    # Other clients' broken records are not First Step House's errors.
    ours = {a.id for a in fetched if a.id in unusable and a.client_id in fsh}
    assert result.plan == "window"
    # Every broken record of the window was served (the run's check that IntakeQ did not
    # change while it read lists the day's changes too, and serves their broken ones again).
    assert stats["malformed_records"] >= sum(1 for kind in kinds.values() if kind)
    assert len(ours) >= 3
    assert len(unusable) > len(ours)
    assert result.summary.errors == len(ours)
    assert result.status == "partial"
    assert sync_log(engine, result).appointments_errors == len(ours)
    assert sync_log(engine, result).status == "partial"

    good = {a.id for a in fetched if a.client_id in fsh and a.id not in unusable}
    # Every good record is stored, those on the same pages as the broken ones included.
    assert set(stored_rows(engine)) == good
    assert result.summary.new == len(good)


def test_a_budget_that_runs_out_mid_run_stops_cleanly_and_keeps_the_pages_fetched(
    engine: Engine, clock: ManualClock
) -> None:
    daily_limit = 3
    sim = start_sim(clock, SimConfig(minute_limit=None, daily_limit=None))
    settings = Settings(
        INTAKEQ_BASE_URL=sim.base_url,
        INTAKEQ_DAILY_LIMIT=daily_limit,
        PQSYNC_DATABASE_URL="sqlite://",  # unused: the App below gets the test's engine
    )
    app = App(settings=settings, engine=engine, clock=clock)
    try:
        import_demo_directory(engine, sim)
        service = app.sync_service()
        result = service.sync_organization(ORG)
        with pytest.raises(SyncInProgress) as refused:
            service.sync_organization(ORG)
        again = refused.value
        stats = sim.stats()
    finally:
        app.close()
        sim.stop()

    everything = window_truth(sim)
    assert len(everything) > (daily_limit + 1) * PAGE  # the window needs more pages than allowed
    # The day window is IntakeQ's 24 h plus our 5% minute-window margin (3 s), like the
    # minute window: the oldest request was sent at NOW.
    frees_at = NOW + timedelta(hours=24, seconds=3)
    assert result.status == "paused"
    assert result.error_kind == "budget"
    assert result.plan == "window"
    assert result.budget_frees_at == frees_at
    assert result.error is not None
    assert "resumes at" in result.error
    log = sync_log(engine, result)
    assert (log.status, log.error_message) == ("paused", result.error)
    assert log.requests_made == daily_limit
    assert log.details["error_kind"] == "budget"

    fsh = fsh_ids(sim)
    # The run's requests: IntakeQ's client list (confirming the ClientIds it learns on the
    # first page), then pages until the budget ran out.
    pages = daily_limit - 1
    fetched = {a.id for a in everything[: pages * PAGE] if a.client_id in fsh}
    assert fetched
    assert set(stored_rows(engine)) == fetched
    assert log.appointments_new == len(fetched)

    # The scope stays the paused run's: another run starts nothing and sends nothing.
    assert again.run_id == result.run_id
    assert again.paused_until == frees_at
    assert stats["requests"] == daily_limit
    assert set(stored_rows(engine)) == fetched
