"""Sync fixtures: a real simulator on loopback, our App on the test's database, seeded data;
`hooked`: a SyncService whose client runs `hooks` between the pages of a window fetch."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import Engine

from intakeq_sim import ManualClock, SimConfig, SimulatorServer, demo_directory
from page_hooks import PageHooks
from pqsync.bootstrap import App
from pqsync.intakeq.budget import MemoryBudget
from pqsync.intakeq.client import IntakeQClient
from pqsync.services.directory import DirectoryFile, import_directory
from pqsync.services.sync import SyncService
from pqsync.settings import SIMULATOR_API_KEY, Settings

NOW = datetime(2025, 10, 24, 16, 0, tzinfo=UTC)  # 10:00 in Denver; the window spans a DST change
TODAY = date(2025, 10, 24)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
def sim(clock: ManualClock) -> Iterator[SimulatorServer]:
    server = SimulatorServer(
        today=TODAY, clock=clock, config=SimConfig(minute_limit=None, daily_limit=None)
    )
    with server:
        yield server


@pytest.fixture
def pq(engine: Engine, sim: SimulatorServer, clock: ManualClock) -> Iterator[App]:
    settings = Settings(
        INTAKEQ_BASE_URL=sim.base_url,
        INTAKEQ_MINUTE_LIMIT=100_000,
        INTAKEQ_DAILY_LIMIT=100_000,
        PQSYNC_DATABASE_URL="sqlite://",  # unused: the engine below is the test's
    )
    app = App(settings=settings, engine=engine, clock=clock)
    import_directory(engine, DirectoryFile.model_validate(demo_directory(sim.dataset)))
    yield app
    app.close()


@pytest.fixture
def service(pq: App) -> SyncService:
    return pq.sync_service()


@pytest.fixture
def hooks() -> PageHooks:
    return PageHooks()


@pytest.fixture
def hooked(
    pq: App, sim: SimulatorServer, clock: ManualClock, hooks: PageHooks
) -> Iterator[SyncService]:
    client = IntakeQClient(
        sim.base_url,
        SIMULATOR_API_KEY,
        budget=MemoryBudget(minute_limit=100_000, daily_limit=100_000, clock=clock),
        transport=hooks,
    )
    with client:
        yield SyncService(pq.engine, client, clock=clock)
