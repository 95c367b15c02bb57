"""The shared request budget: minute window waits, daily exhaustion, cross-process locking."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
import threading
import uuid
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from intakeq_fakes import API_KEY, T0, BudgetFactory, FakeClock
from sqlalchemy import Engine, select

from pqsync.db.tables import IntakeQRequest
from pqsync.intakeq.budget import DatabaseBudget, MemoryBudget
from pqsync.intakeq.errors import BudgetExhausted


def test_it_waits_until_the_oldest_request_leaves_the_minute_window(
    make_budget: BudgetFactory, clock: FakeClock
) -> None:
    budget = make_budget(minute_limit=3, daily_limit=100, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        budget.acquire()
        clock.advance(10)

    budget.acquire()  # at T0+30: the window holds T0, T0+10, T0+20

    assert clock.sleeps == [30.0]  # until T0 is 60 s old
    usage = budget.usage()
    assert (usage.minute_used, usage.day_used) == (3, 4)


def test_waits_are_reported_to_on_wait(make_budget: BudgetFactory, clock: FakeClock) -> None:
    waits: list[float] = []
    budget = make_budget(
        minute_limit=1,
        daily_limit=100,
        minute_window=timedelta(seconds=5),
        clock=clock,
        sleep=clock.sleep,
        on_wait=waits.append,
    )
    budget.acquire()
    budget.acquire()
    budget.acquire()
    assert waits == clock.sleeps == [5.0, 5.0]


def test_the_spent_day_raises_budget_exhausted_until_the_oldest_request_is_a_day_old(
    make_budget: BudgetFactory,
) -> None:
    with time_machine.travel(T0, tick=False) as traveller:
        sleeps: list[float] = []
        budget = make_budget(minute_limit=10, daily_limit=5, sleep=sleeps.append)
        for _ in range(5):
            budget.acquire()
            traveller.shift(timedelta(hours=1))

        with pytest.raises(BudgetExhausted) as raised:
            budget.acquire()

        assert (raised.value.used, raised.value.limit) == (5, 5)
        assert raised.value.frees_at == T0 + timedelta(hours=24)
        assert budget.usage().day_frees_at == T0 + timedelta(hours=24)
        assert sleeps == []  # it never waits for a day

        traveller.move_to(T0 + timedelta(hours=24))
        budget.acquire()
        assert budget.usage().day_used == 5


def test_usage_counts_both_windows(make_budget: BudgetFactory, clock: FakeClock) -> None:
    budget = make_budget(minute_limit=10, daily_limit=100, clock=clock, sleep=clock.sleep)
    assert budget.usage().day_frees_at is None
    budget.acquire()
    clock.advance(3600)
    budget.acquire()
    budget.acquire()

    usage = budget.usage()

    assert usage.minute_used == 2
    assert usage.day_used == 3
    assert (usage.minute_limit, usage.daily_limit) == (10, 100)
    assert usage.day_frees_at == T0 + timedelta(hours=24)


def test_memory_budget_never_hands_out_more_than_the_day_across_threads() -> None:
    budget = MemoryBudget(minute_limit=1000, daily_limit=50)
    granted: list[int] = []
    refused: list[int] = []

    def worker() -> None:
        for _ in range(10):
            try:
                budget.acquire()
                granted.append(1)
            except BudgetExhausted:
                refused.append(1)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert (len(granted), len(refused)) == (50, 30)


def test_it_stores_a_fingerprint_never_the_key(engine: Engine, clock: FakeClock) -> None:
    DatabaseBudget(engine, API_KEY, minute_limit=5, daily_limit=5, clock=clock).acquire()

    with engine.connect() as conn:
        stored = conn.execute(select(IntakeQRequest.key_fingerprint)).scalars().all()

    assert stored == [hashlib.sha256(API_KEY.encode()).hexdigest()]


def test_budgets_with_the_same_key_share_windows_and_other_keys_do_not(
    engine: Engine, clock: FakeClock
) -> None:
    def budget(key: str) -> DatabaseBudget:
        return DatabaseBudget(
            engine, key, minute_limit=2, daily_limit=10, clock=clock, sleep=clock.sleep
        )

    first, second, other_key = budget(API_KEY), budget(API_KEY), budget(API_KEY + "-other")

    first.acquire()
    first.acquire()
    other_key.acquire()
    second.acquire()  # the window is full: it waits for the first request to age out

    assert clock.sleeps == [60.0]
    assert second.usage().day_used == 3
    assert other_key.usage().day_used == 1


def test_requests_older_than_a_day_are_pruned(engine: Engine, clock: FakeClock) -> None:
    budget = DatabaseBudget(engine, API_KEY, minute_limit=5, daily_limit=5, clock=clock)
    budget.acquire()
    clock.advance(24 * 3600 + 1)
    budget.acquire()

    with engine.connect() as conn:
        kept = conn.execute(select(IntakeQRequest.sent_at)).scalars().all()
    assert kept == [clock.now]


# Each process waits for "go" on stdin so that they really contend for the window.
_ACQUIRER = textwrap.dedent(
    """
    import sys
    from datetime import timedelta
    from pqsync.db.engine import make_engine
    from pqsync.intakeq.budget import DatabaseBudget

    url, key, count, limit, window = sys.argv[1:]
    engine = make_engine(url)
    budget = DatabaseBudget(
        engine, key, minute_limit=int(limit), daily_limit=10_000,
        minute_window=timedelta(seconds=float(window)),
    )
    print("ready", flush=True)
    sys.stdin.readline()
    for _ in range(int(count)):
        budget.acquire()
    engine.dispose()
    """
)


def test_two_processes_never_put_more_than_the_limit_in_any_window(
    engine: Engine, database_url: str
) -> None:
    limit, window, per_process = 3, timedelta(seconds=1), 6
    args = [database_url, API_KEY, str(per_process), str(limit), str(window.total_seconds())]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _ACQUIRER, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for process in processes:
            assert process.stdout is not None and process.stdout.readline() == "ready\n"
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.close()
        for process in processes:
            assert process.wait(timeout=60) == 0
    finally:
        for process in processes:
            process.kill()
            process.wait()
            if process.stdout is not None:
                process.stdout.close()

    with engine.connect() as conn:
        query = select(IntakeQRequest.sent_at).order_by(IntakeQRequest.sent_at)
        sent = conn.execute(query).scalars().all()
    assert len(sent) == 2 * per_process
    # Any `limit + 1` consecutive requests span at least one whole window.
    assert all(
        later - earlier >= window for earlier, later in zip(sent, sent[limit:], strict=False)
    )


def test_an_answer_within_the_margin_keeps_its_reservation_date(
    make_budget: BudgetFactory, clock: FakeClock
) -> None:
    budget = make_budget(
        minute_limit=1,
        daily_limit=100,
        settle_within=timedelta(seconds=3),
        clock=clock,
        sleep=clock.sleep,
    )
    budget.acquire()  # at T0
    clock.advance(2)
    budget.settle()  # answered 2 s later: within the margin, still dated T0
    budget.acquire()
    assert clock.sleeps == [58.0]  # until T0 + 60

    clock.advance(5)
    budget.settle()  # answered 5 s after its reservation: re-dated to the answer
    budget.acquire()
    assert clock.sleeps == [58.0, 60.0]
    # The day window is 24 h plus the margin; its oldest request is the one at T0.
    assert budget.usage().day_frees_at == T0 + timedelta(hours=24, seconds=3)


def test_a_margin_as_long_as_the_window_is_refused(make_budget: BudgetFactory) -> None:
    with pytest.raises(ValueError, match="settle_within"):
        make_budget(minute_limit=1, daily_limit=1, settle_within=timedelta(seconds=60))


def test_a_full_window_is_read_from_counts_however_many_requests_the_day_holds(
    make_budget: BudgetFactory, clock: FakeClock
) -> None:
    budget = make_budget(minute_limit=5, daily_limit=1000, clock=clock, sleep=clock.sleep)
    for _ in range(300):  # a busy day: 300 requests, 20 s apart
        budget.acquire()
        clock.advance(20)
    assert clock.sleeps == []
    for _ in range(4):  # then a burst: the window holds 2 old requests, then 3 new ones
        budget.acquire()
    assert clock.sleeps == [20.0]  # the oldest of the window (40 s old) ages out in 20 s
    usage = budget.usage()
    assert (usage.minute_used, usage.day_used) == (5, 304)
    assert usage.day_frees_at == T0 + timedelta(hours=24)


_STEPS = st.lists(
    st.tuples(
        st.sampled_from([0, 0.25, 1, 2.5, 3, 3.5, 30, 57, 60, 60.5, 3600, 86_400, 86_403]),
        st.sampled_from(["acquire", "acquire", "settle", "usage"]),
    ),
    max_size=30,
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=_STEPS)
def test_the_database_budget_decides_as_the_memory_budget_does(
    engine: Engine, steps: list[tuple[float, str]]
) -> None:
    """Waits, exhaustion (with when the day frees) and usage, step for step, with limits
    small enough that both windows fill and the stored times must be read back."""
    options: dict[str, Any] = {
        "minute_limit": 2,
        "daily_limit": 5,
        "minute_window": timedelta(seconds=60),
        "settle_within": timedelta(seconds=3),
    }
    clocks = {"memory": FakeClock(), "database": FakeClock()}
    budgets: dict[str, MemoryBudget | DatabaseBudget] = {
        "memory": MemoryBudget(clock=clocks["memory"], sleep=clocks["memory"].sleep, **options),
        "database": DatabaseBudget(
            engine,
            f"{API_KEY}-{uuid.uuid4()}",  # a key of its own for each example
            clock=clocks["database"],
            sleep=clocks["database"].sleep,
            **options,
        ),
    }

    def run(kind: str) -> list[object]:
        budget, clock = budgets[kind], clocks[kind]
        outcomes: list[object] = []
        for seconds, action in steps:
            clock.advance(seconds)
            if action == "acquire":
                try:
                    budget.acquire()
                    outcomes.append(("granted", clock.now, list(clock.sleeps)))
                except BudgetExhausted as exc:
                    outcomes.append(("exhausted", exc.used, exc.limit, exc.frees_at))
            elif action == "settle":
                budget.settle()
            else:
                outcomes.append(budget.usage())
        return outcomes

    assert run("database") == run("memory")
