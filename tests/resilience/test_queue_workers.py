"""Two `pqsync worker` processes on one Redis queue, on loopback: the nightly run and a
bulk sync each carried out once, no scope synced twice at once, the shared request budget
held at the simulator's own count; a worker SIGKILLed mid-run leaves consistent data, its
run is closed as failed after its lease, and the next run completes the work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

import leakcheck
from intakeq_sim import SimConfig, SimulatorServer, demo_directory
from pqsync.bootstrap import App
from pqsync.db.engine import make_engine
from pqsync.db.tables import Appointment, IntakeQRequest, SyncLog
from pqsync.services.directory import DirectoryFile, import_directory
from pqsync.settings import load_settings

MINUTE_LIMIT = 3
WINDOW_SECONDS = 2.0
DAILY_LIMIT = 60
ORG = "first-step-house"
REDIS = "redis://127.0.0.1:6379/0"
WORKER = [sys.executable, "-m", "pqsync.cli", "--log-level", "INFO", "worker", "--workers", "2"]


@pytest.fixture
def queue_url() -> Iterator[str]:
    name = f"pqsync-test-{uuid.uuid4().hex[:12]}"
    connection = redis.Redis.from_url(REDIS)
    try:
        connection.ping()
    except redis.ConnectionError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    yield f"{REDIS}?queue={name}"
    for key in connection.scan_iter(f"huey.*{name}*"):
        connection.delete(key)
    connection.close()


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    config = SimConfig(
        minute_limit=MINUTE_LIMIT,
        minute_window_seconds=WINDOW_SECONDS,
        daily_limit=DAILY_LIMIT,
        latency_ms=50,
    )
    with SimulatorServer(port=0, config=config) as server:
        yield server


@pytest.fixture
def env(
    sim: SimulatorServer, engine: Engine, database_url: str, queue_url: str, tmp_path: Path
) -> dict[str, str]:
    import_directory(engine, DirectoryFile.model_validate(demo_directory(sim.dataset)))
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("PQSYNC_", "INTAKEQ_"))}
    return {
        **inherited,
        "PQSYNC_DATABASE_URL": database_url,
        "PQSYNC_QUEUE_URL": queue_url,
        "INTAKEQ_BASE_URL": sim.base_url,
        "INTAKEQ_MINUTE_LIMIT": str(MINUTE_LIMIT),
        "INTAKEQ_MINUTE_WINDOW_SECONDS": str(WINDOW_SECONDS),
        "INTAKEQ_DAILY_LIMIT": str(DAILY_LIMIT),
        "PQSYNC_RUN_LEASE_SECONDS": "3",
        "HOME": str(tmp_path),
    }


@pytest.fixture
def start_worker(
    env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start() -> subprocess.Popen[bytes]:
        log = tmp_path / f"worker-{len(started)}.err"
        with log.open("w") as stderr:
            process = subprocess.Popen(
                WORKER, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=stderr
            )
        started.append((process, log))
        return process

    yield start
    for process, log in started:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        leakcheck.append(log.read_text())


def client_app(env: dict[str, str]) -> App:
    settings = load_settings(
        **{k: v for k, v in env.items() if k.startswith(("PQSYNC_", "INTAKEQ_"))}
    )
    return App(settings=settings, engine=make_engine(settings.database_url))


def runs(engine: Engine) -> list[SyncLog]:
    with Session(engine) as session:
        return list(session.scalars(select(SyncLog).order_by(SyncLog.started_at)))


def wait_for(condition: Callable[[], bool], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def truth(sim: SimulatorServer) -> dict[str, tuple[object, ...]]:
    start, end = sim.dataset.default_window()
    ids = {c.client_id for c in sim.dataset.fsh_patients}
    return {a.id: (a.start, a.status) for a in sim.dataset.appointments_in_window(start, end, ids)}


def stored(engine: Engine) -> list[str]:
    with Session(engine) as session:
        return list(
            session.scalars(
                select(Appointment.pq_appointment_id).where(Appointment.deleted_at.is_(None))
            )
        )


def test_two_workers_carry_out_the_nightly_run_and_a_bulk_sync_once_each_within_the_budget(
    sim: SimulatorServer,
    env: dict[str, str],
    engine: Engine,
    start_worker: Callable[[], subprocess.Popen[bytes]],
) -> None:
    app = client_app(env)
    try:
        prepared = app.sync_service().prepare_organization(ORG)
        app.jobs.run_later(prepared)
    finally:
        app.close()
    start_worker()
    start_worker()

    def all_finished() -> bool:
        found = runs(engine)
        return len(found) >= 2 and all(r.status != "running" for r in found)

    wait_for(all_finished)
    time.sleep(1)  # a late duplicate would show here
    found = runs(engine)

    assert sorted((r.run_type, r.status) for r in found) == [
        ("automated_daily", "success"),
        ("manual_org", "success"),
    ]
    stats = sim.stats()
    assert stats["rate_limited"] == 0, stats
    assert stats["max_accepted_in_window"] <= MINUTE_LIMIT
    assert stats["requests"] <= DAILY_LIMIT
    with Session(engine) as session:
        budgeted = session.scalar(select(func.count()).select_from(IntakeQRequest))
    assert stats["requests"] == budgeted  # every request went through the shared budget
    assert sorted(stored(engine)) == sorted(truth(sim))


def test_a_worker_killed_mid_run_leaves_consistent_data_and_the_next_run_completes_it(
    sim: SimulatorServer,
    env: dict[str, str],
    engine: Engine,
    start_worker: Callable[[], subprocess.Popen[bytes]],
) -> None:
    sim.configure(latency_ms=400, minute_limit=None)
    env["INTAKEQ_MINUTE_LIMIT"] = "1000"
    app = client_app(env)
    try:
        # Tonight's run is done (claimed): the worker only has the bulk sync to do.
        app.jobs.start_nightly()
        killed = app.sync_service().prepare_organization(ORG)
        app.jobs.run_later(killed)
        worker = start_worker()
        wait_for(lambda: len(stored(engine)) > 0, seconds=60)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        partial = stored(engine)
        assert len(partial) == len(set(partial))  # no duplicate appointment
        assert set(partial) <= set(truth(sim))

        time.sleep(3.5)  # the lease runs out
        start_worker()  # its first tick closes the dead run
        wait_for(lambda: runs(engine)[-1].status != "running", seconds=60)
        with Session(engine) as session:
            dead = session.get(SyncLog, killed.run_id)
            assert dead is not None
            assert (dead.status, dead.error_message) == ("failed", "worker stopped")

        sim.configure(latency_ms=0)
        again = app.sync_service().prepare_organization(ORG)
        app.jobs.run_later(again)
        wait_for(
            lambda: runs(engine)[-1].status != "running" and runs(engine)[-1].id == again.run_id
        )
        assert runs(engine)[-1].status == "success"
        with Session(engine) as session:
            count = session.scalar(select(func.count()).select_from(Appointment))
        assert sorted(stored(engine)) == sorted(truth(sim))
        assert count == len(truth(sim))
    finally:
        app.close()
