"""Two `pqsync` processes syncing at once share one IntakeQ key, one budget and one database.

The simulator runs in this process on the real clock. In the limit test it enforces the
same small limit we are configured with (3 requests per 2 s), so any overshoot by the two
processes together is answered with a 429 and shows in its busiest window.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

import leakcheck
from intakeq_sim import SimConfig, SimulatorServer
from pqsync.db.tables import Appointment, IntakeQRequest, SyncLog
from pqsync.settings import SIMULATOR_API_KEY
from process_env import process_env

MINUTE_LIMIT = 3
WINDOW_SECONDS = 2.0
ORG = "first-step-house"
PQSYNC = [sys.executable, "-m", "pqsync.cli", "--log-level", "INFO"]
ALREADY_RUNNING = re.compile(
    rf"^error: a sync of organization {ORG} is already running \(run [0-9a-f-]{{36}}\)$"
)


@dataclass
class Finished:
    returncode: int | None  # None: stopped by the test after IntakeQ answered 429
    stdout: str
    stderr: str

    def result(self) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self.stdout)
        return body


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    config = SimConfig(
        minute_limit=MINUTE_LIMIT, minute_window_seconds=WINDOW_SECONDS, daily_limit=None
    )
    with SimulatorServer(port=0, config=config) as server:
        yield server


@pytest.fixture
def env(sim: SimulatorServer, engine: Engine, database_url: str, tmp_path: Path) -> dict[str, str]:
    return process_env(
        sim,
        engine,
        database_url,
        tmp_path,
        INTAKEQ_MINUTE_LIMIT=str(MINUTE_LIMIT),
        INTAKEQ_MINUTE_WINDOW_SECONDS=str(WINDOW_SECONDS),
    )


def run_at_once(
    sim: SimulatorServer,
    env: dict[str, str],
    cwd: Path,
    *commands: list[str],
    slow_first_window: bool = False,
    hold_until: Callable[[], bool] | None = None,
) -> list[Finished]:
    """Start every command before waiting for any, in `cwd` (so no stray `.env` is read).

    A 429 already decides the test, so the processes are stopped then rather than left to
    sit out IntakeQ's minute. With `slow_first_window`, the simulator answers slowly until
    it has received a window's worth of requests, as a real network sometimes does. With
    `hold_until`, the simulator holds every API request until `hold_until()` is true.
    """
    released = threading.Event()
    if hold_until is not None:
        handle = sim.app.handle

        def held(request: Any) -> Any:
            released.wait(30)
            return handle(request)

        sim.app.handle = held  # type: ignore[method-assign]
    else:
        released.set()
    if slow_first_window:
        sim.configure(latency_ms=150)
    outputs = [(cwd / f"{n}.out", cwd / f"{n}.err") for n in range(len(commands))]
    processes = []
    for command, (out, err) in zip(commands, outputs, strict=True):
        with out.open("w") as stdout, err.open("w") as stderr:
            processes.append(
                subprocess.Popen(
                    [*PQSYNC, *command], env=env, cwd=cwd, stdout=stdout, stderr=stderr
                )
            )
    deadline = time.monotonic() + 120
    try:
        while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
            stats = sim.stats()
            if stats["rate_limited"]:
                break
            if not released.is_set() and hold_until is not None and hold_until():
                released.set()
            if slow_first_window and stats["requests"] >= MINUTE_LIMIT:
                sim.configure(latency_ms=0)
            time.sleep(0.02)
    finally:
        released.set()
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait()
    killed = -9
    return [
        Finished(None if p.returncode == killed else p.returncode, out.read_text(), err.read_text())
        for p, (out, err) in zip(processes, outputs, strict=True)
    ]


def fsh_truth(sim: SimulatorServer) -> set[str]:
    start, end = sim.dataset.default_window()
    ids = {c.client_id for c in sim.dataset.fsh_patients}
    return {a.id for a in sim.dataset.appointments_in_window(start, end, ids)}


def stored_ids(engine: Engine) -> set[str]:
    with Session(engine) as session:
        query = select(Appointment.pq_appointment_id).where(Appointment.deleted_at.is_(None))
        return set(session.scalars(query))


def sync_logs(engine: Engine) -> list[SyncLog]:
    with Session(engine) as session:
        return list(session.scalars(select(SyncLog).order_by(SyncLog.started_at)))


def budget_log_size(engine: Engine) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(IntakeQRequest)) or 0


def assert_nothing_private_logged(sim: SimulatorServer, runs: list[Finished]) -> None:
    heavy = sim.dataset.special.heavy
    for run in runs:
        leakcheck.append(run.stderr)  # scanned with the session's log at its end
        assert SIMULATOR_API_KEY not in run.stdout + run.stderr
        assert heavy.email not in run.stderr
        assert heavy.email.replace("@", "%40") not in run.stderr
    # The request log was on, so the checks above had something to look at.
    assert any("intakeq.request" in run.stderr for run in runs)


def test_an_org_and_a_patient_sync_at_once_stay_within_the_shared_limit(
    sim: SimulatorServer, env: dict[str, str], engine: Engine, tmp_path: Path
) -> None:
    heavy = sim.dataset.special.heavy
    runs = run_at_once(
        sim,
        env,
        tmp_path,
        ["sync", "org", ORG, "--json"],
        ["sync", "patient", heavy.directory_email or heavy.email, "--json"],
        slow_first_window=True,
        # Nobody is answered until both runs have begun: one cannot end before the other starts.
        hold_until=lambda: len(sync_logs(engine)) == 2,
    )

    stats = sim.stats()
    assert stats["rate_limited"] == 0, stats
    assert stats["max_accepted_in_window"] <= MINUTE_LIMIT
    for run in runs:
        assert run.returncode == 0, run.stderr
    org, patient = (run.result() for run in runs)
    assert (org["status"], patient["status"]) == ("success", "success")
    assert stats["requests"] == org["requestsMade"] + patient["requestsMade"]
    assert stats["requests"] > MINUTE_LIMIT  # more than one window's worth had to be spread
    # Both really talked to IntakeQ during the same stretch of time.
    first, second = sync_logs(engine)
    assert first.finished_at is not None
    assert second.started_at < first.finished_at

    assert stored_ids(engine) == fsh_truth(sim)
    assert_nothing_private_logged(sim, runs)


def test_two_syncs_of_the_same_org_run_once_and_share_the_request_log(
    sim: SimulatorServer, env: dict[str, str], engine: Engine, tmp_path: Path
) -> None:
    # Limits out of the way here (the test above is about them); a slow IntakeQ keeps the
    # first run busy while the second one starts.
    sim.configure(minute_limit=None, latency_ms=300)
    env = {**env, "INTAKEQ_MINUTE_LIMIT": "1000"}

    def one_was_refused() -> bool:
        # IntakeQ answers nobody until one of the two has been told the other is running:
        # if both went ahead, neither is refused, the hold times out and the test fails.
        return any(
            "already running" in (tmp_path / f"{n}.err").read_text(errors="replace")
            for n in range(2)
            if (tmp_path / f"{n}.err").exists()
        )

    runs = run_at_once(
        sim,
        env,
        tmp_path,
        ["sync", "org", ORG, "--json"],
        ["sync", "org", ORG, "--json"],
        hold_until=one_was_refused,
    )

    succeeded = [run for run in runs if run.returncode == 0]
    refused = [run for run in runs if run.returncode != 0]
    assert len(succeeded) == 1 and len(refused) == 1, [r.stderr[-300:] for r in runs]
    for run in succeeded:
        assert run.result()["status"] == "success"
    for run in refused:
        assert run.returncode == 1, run.stderr
        assert ALREADY_RUNNING.match(run.stderr.strip().splitlines()[-1]), run.stderr
        assert run.stdout == ""

    sent = sum(run.result()["requestsMade"] for run in succeeded)
    assert sim.stats()["requests"] == sent == budget_log_size(engine)
    assert len(sync_logs(engine)) == len(succeeded)
    assert stored_ids(engine) == fsh_truth(sim)
    assert_nothing_private_logged(sim, runs)
