"""Fixtures for the IntakeQ client and budget tests; databases come from tests/conftest.py."""

from __future__ import annotations

import pytest
from intakeq_fakes import API_KEY, BudgetFactory, FakeClock
from sqlalchemy import Engine

from pqsync.intakeq.budget import DatabaseBudget, MemoryBudget


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "database"])
def make_budget(request: pytest.FixtureRequest, engine: Engine) -> BudgetFactory:
    """Builds the budget under test: in memory, or in the test's database."""
    if request.param == "memory":
        return lambda **kw: MemoryBudget(**kw)
    return lambda **kw: DatabaseBudget(engine, API_KEY, **kw)
