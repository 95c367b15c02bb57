"""Hand-written fakes shared by the IntakeQ client and budget tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from pqsync.intakeq.budget import DatabaseBudget, MemoryBudget

API_KEY = "test-intakeq-key"
T0 = datetime(2025, 10, 24, 15, 0, tzinfo=UTC)

BudgetFactory = Callable[..., MemoryBudget | DatabaseBudget]


class FakeClock:
    """A clock that only moves when told to; `sleep` records the wait and moves it."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)
