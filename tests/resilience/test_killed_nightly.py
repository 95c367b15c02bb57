"""A `pqsync worker` SIGKILLed in the middle of the nightly run: the next worker closes the
dead run, runs the night again the same day, and the stored data ends equal to the
simulator's; the failure is told once, by mail to a real SMTP server on loopback (and
"works again" once the retried night succeeds)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

import leakcheck
from intakeq_sim import SimConfig, SimulatorServer
from pqsync.db.tables import Appointment, NightlyClaim, SyncLog
from process_env import process_env

sys.path.insert(0, str(Path(__file__).parents[1] / "web"))
from mail_support import Inbox, smtp_server, text_of

WORKER = [sys.executable, "-m", "pqsync.cli", "--log-level", "INFO", "worker", "--workers", "1"]
LEASE_SECONDS = 3


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    # Slow pages, so that the kill comes mid-run.
    config = SimConfig(minute_limit=None, daily_limit=None, latency_ms=300)
    with SimulatorServer(port=0, config=config) as server:
        yield server


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    with smtp_server() as (inbox, port):
        yield inbox, port


def wait_for(condition: Callable[[], bool], seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def nightly_runs(engine: Engine) -> list[SyncLog]:
    with Session(engine) as session:
        return list(
            session.scalars(
                select(SyncLog).filter_by(sync_type="nightly").order_by(SyncLog.started_at)
            )
        )


def stored(engine: Engine) -> list[str]:
    with Session(engine) as session:
        return list(
            session.scalars(
                select(Appointment.pq_appointment_id).where(Appointment.deleted_at.is_(None))
            )
        )


def test_a_sigkilled_nightly_run_is_run_again_the_same_day_and_alerts_once(
    sim: SimulatorServer,
    smtp: tuple[Inbox, int],
    engine: Engine,
    database_url: str,
    tmp_path: Path,
) -> None:
    inbox, smtp_port = smtp
    env = process_env(
        sim,
        engine,
        database_url,
        tmp_path,
        PQSYNC_QUEUE_URL=f"sqlite:///{tmp_path / 'queue.db'}",
        INTAKEQ_MINUTE_LIMIT="1000",
        PQSYNC_RUN_LEASE_SECONDS=str(LEASE_SECONDS),
        PQSYNC_SMTP_URL=f"smtp://127.0.0.1:{smtp_port}",
        PQSYNC_ALERT_EMAILS="oncall@clinic.example",
    )
    log = tmp_path / "worker.log"
    with log.open("w") as stream:
        first = subprocess.Popen(WORKER, env=env, cwd=tmp_path, stdout=stream, stderr=stream)
        try:
            # Its first tick claims tonight's run (the latest 03:00 has come) and starts it.
            wait_for(lambda: len(stored(engine)) > 0)
            assert first.poll() is None, "the worker stopped before the kill"
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()

    (killed,) = nightly_runs(engine)
    assert killed.status == "running"  # nobody closed it: its worker is gone
    partial = stored(engine)
    assert len(partial) == len(set(partial))
    time.sleep(LEASE_SECONDS + 0.5)  # the dead run's lease lapses

    with log.open("a") as stream:
        second = subprocess.Popen(WORKER, env=env, cwd=tmp_path, stdout=stream, stderr=stream)
        try:
            wait_for(lambda: any(r.status == "success" for r in nightly_runs(engine)))
            wait_for(lambda: len(inbox.messages) >= 2, seconds=30)
            time.sleep(2)  # a late duplicate mail would show here
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=60)
    leakcheck.append(log.read_text())

    runs = nightly_runs(engine)
    assert runs[0].id == killed.id
    assert [(r.status, r.error_message) for r in runs] == [
        ("failed", "worker stopped"),
        ("success", None),
    ]
    with Session(engine) as session:
        claims = session.execute(select(NightlyClaim.local_day, NightlyClaim.run_id)).all()
        count = session.scalar(select(func.count()).select_from(Appointment))
    # The same night (one claim per organisation and local day) carried out by the new run.
    assert {day for day, _ in claims} == {claims[0][0]}
    assert {run_id for _, run_id in claims} == {runs[1].id}

    start, end = sim.dataset.default_window()
    fsh = {c.client_id for c in sim.dataset.fsh_patients}
    truth = {a.id for a in sim.dataset.appointments_in_window(start, end, fsh)}
    assert set(stored(engine)) == truth
    assert count == len(truth)

    subjects = [str(m["Subject"]) for m in inbox.messages]
    failed = [s for s in subjects if "failed" in s]
    assert len(failed) == 1, subjects
    assert "nightly" in failed[0].lower()
    assert str(killed.id) in text_of(inbox.messages[subjects.index(failed[0])])
    # Then the one "works again" for the retried night; nothing else.
    assert len(subjects) == 2 and "works again" in subjects[1], subjects
