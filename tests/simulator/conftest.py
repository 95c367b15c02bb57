"""Fixtures for the IntakeQ simulator tests: a real server on loopback with a controlled clock."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest

from intakeq_sim import ManualClock, SimConfig, SimulatorServer
from pqsync.settings import SIMULATOR_API_KEY

TODAY = date(2025, 10, 24)  # the window then spans the DST change of 2 November 2025
NOW = datetime(2025, 10, 24, 16, 0, tzinfo=UTC)  # 10:00 in Denver


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
def make_sim(clock: ManualClock) -> Iterator[Callable[..., SimulatorServer]]:
    """Start a simulator (no rate limits unless asked for); every one is stopped afterwards."""
    started: list[SimulatorServer] = []

    def make(*, config: SimConfig | None = None, **kwargs: Any) -> SimulatorServer:
        kwargs.setdefault("today", TODAY)
        kwargs.setdefault("clock", clock)
        config = config or SimConfig(minute_limit=None, daily_limit=None)
        server = SimulatorServer(config=config, **kwargs).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def sim(make_sim: Callable[..., SimulatorServer]) -> SimulatorServer:
    return make_sim()


@pytest.fixture
def api(sim: SimulatorServer) -> Iterator[httpx.Client]:
    """An IntakeQ API client holding the simulator's key."""
    with httpx.Client(
        base_url=sim.base_url, headers={"X-Auth-Key": SIMULATOR_API_KEY}, timeout=10
    ) as client:
        yield client


@pytest.fixture
def control(sim: SimulatorServer) -> Iterator[httpx.Client]:
    """The provider side: the simulator's /_sim control API."""
    with httpx.Client(base_url=sim.control_url, timeout=10) as client:
        yield client
