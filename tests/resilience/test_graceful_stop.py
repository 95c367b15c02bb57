"""A worker stopped with SIGTERM (systemd's stop, a deploy) in the middle of a run: the run
stops at a page's end, hands its scope back and is queued again (paused, not failed); the
next worker completes it, with no failure alert."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

import leakcheck
from intakeq_sim import SimConfig, SimulatorServer
from pqsync.bootstrap import App
from pqsync.db.engine import make_engine
from pqsync.db.tables import Alert, Appointment, SyncLock, SyncLog
from pqsync.settings import load_settings
from process_env import process_env

ORG = "first-step-house"
WORKER = [sys.executable, "-m", "pqsync.cli", "--log-level", "INFO", "worker", "--workers", "1"]


@pytest.fixture
def sim() -> SimulatorServer:
    # Slow pages, so that the stop comes mid-run.
    config = SimConfig(minute_limit=None, daily_limit=None, latency_ms=300)
    with SimulatorServer(port=0, config=config) as server:
        yield server  # type: ignore[misc]


def wait_for(condition: Callable[[], bool], seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def stored(engine: Engine) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(Appointment)) or 0


def runs(engine: Engine) -> list[SyncLog]:
    """The organisation's runs (the worker's first tick may start the nightly run too)."""
    with Session(engine) as session:
        return list(
            session.scalars(
                select(SyncLog).filter_by(sync_type="organization").order_by(SyncLog.started_at)
            )
        )


def test_sigterm_mid_run_requeues_the_run_and_the_next_worker_completes_it_without_alert(
    sim: SimulatorServer, engine: Engine, database_url: str, tmp_path: Path
) -> None:
    env = process_env(
        sim,
        engine,
        database_url,
        tmp_path,
        PQSYNC_QUEUE_URL=f"sqlite:///{tmp_path / 'queue.db'}",
        INTAKEQ_MINUTE_LIMIT="1000",
    )
    settings = load_settings(
        **{k: v for k, v in env.items() if k.startswith(("PQSYNC_", "INTAKEQ_"))}
    )
    app = App(settings=settings, engine=make_engine(settings.database_url))
    # Per patient, one request each: many page ends at which to stop.
    prepared = app.sync_service().prepare_organization(ORG)
    app.jobs.run_later(prepared)
    log = tmp_path / "worker.log"

    with log.open("w") as stream:
        first = subprocess.Popen(WORKER, env=env, cwd=tmp_path, stdout=stream, stderr=stream)
        try:
            wait_for(lambda: stored(engine) > 0)
            assert first.poll() is None, "the run ended before the stop"
            first.send_signal(signal.SIGTERM)
            assert first.wait(timeout=60) == 0
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()

    (stopped,) = runs(engine)
    assert stopped.status == "paused"
    assert stopped.error_message is not None and "handed back" in stopped.error_message
    with Session(engine) as session:
        held = session.scalar(
            select(func.count()).select_from(SyncLock).filter_by(run_id=stopped.id)
        )
        assert held == 0  # its lease released

    with log.open("a") as stream:
        second = subprocess.Popen(WORKER, env=env, cwd=tmp_path, stdout=stream, stderr=stream)
        try:
            wait_for(lambda: any(r.status == "success" for r in runs(engine)))
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=60)
    leakcheck.append(log.read_text())

    start, end = sim.dataset.default_window()
    fsh = {c.client_id for c in sim.dataset.fsh_patients}
    truth = {a.id for a in sim.dataset.appointments_in_window(start, end, fsh)}
    with Session(engine) as session:
        live = set(
            session.scalars(
                select(Appointment.pq_appointment_id).where(Appointment.deleted_at.is_(None))
            )
        )
        alerts = session.scalars(select(Alert.kind)).all()
    # The next worker's tick took the handed-back run up again as itself.
    assert [(r.id, r.status) for r in runs(engine)] == [(stopped.id, "success")]
    assert live == truth
    assert "failure" not in alerts
    app.engine.dispose()
