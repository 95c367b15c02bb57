"""A `pqsync sync` process killed (SIGKILL) in the middle of a run: the data it wrote is
whole, its scope is free again once its lease lapses, its run is closed as failed, and the
next run completes the work."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

import leakcheck
from intakeq_sim import SimConfig, SimulatorServer
from pqsync.db.tables import Appointment, PatientActivity, SyncLog
from process_env import process_env

ORG = "first-step-house"
# Long enough that the refused second run starts inside it on a loaded machine.
LEASE_SECONDS = 8
PQSYNC = [sys.executable, "-m", "pqsync.cli", "--log-level", "INFO"]


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    config = SimConfig(minute_limit=None, daily_limit=None, latency_ms=400)
    with SimulatorServer(port=0, config=config) as server:
        yield server


@pytest.fixture
def env(sim: SimulatorServer, engine: Engine, database_url: str, tmp_path: Path) -> dict[str, str]:
    return process_env(
        sim,
        engine,
        database_url,
        tmp_path,
        INTAKEQ_MINUTE_LIMIT="1000",
        PQSYNC_RUN_LEASE_SECONDS=str(LEASE_SECONDS),
    )


def stored(engine: Engine) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(Appointment)) or 0


def sync_org(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*PQSYNC, "sync", "org", ORG, "--json"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    leakcheck.append(result.stderr)
    return result


def test_a_killed_run_leaves_whole_data_frees_its_scope_and_is_closed_as_failed(
    sim: SimulatorServer, env: dict[str, str], engine: Engine, tmp_path: Path
) -> None:
    process = subprocess.Popen(
        [*PQSYNC, "sync", "org", ORG, "--json"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while stored(engine) == 0 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()

    with Session(engine) as session:
        (killed,) = session.scalars(select(SyncLog)).all()
        rows = session.scalar(select(func.count()).select_from(Appointment))
        created = session.scalar(
            select(func.count())
            .select_from(PatientActivity)
            .where(PatientActivity.activity_type == "appointment_created")
        )
    # Whole pages only: every stored appointment has its audit entry, and no more.
    assert rows and rows == created
    assert killed.status == "running"

    # While the dead run's lease lasts, its scope is still taken.
    refused = sync_org(env, tmp_path)
    assert refused.returncode == 1 and "already running" in refused.stderr
    time.sleep(LEASE_SECONDS + 0.5)

    again = sync_org(env, tmp_path)
    assert again.returncode == 0, again.stderr[-500:]
    start, end = sim.dataset.default_window()
    fsh = {c.client_id for c in sim.dataset.fsh_patients}
    truth = {a.id for a in sim.dataset.appointments_in_window(start, end, fsh)}
    with Session(engine) as session:
        closed = session.get(SyncLog, killed.id)
        live = set(
            session.scalars(
                select(Appointment.pq_appointment_id).where(Appointment.deleted_at.is_(None))
            )
        )
    assert closed is not None and closed.status == "failed"
    assert closed.error_message is not None and "worker stopped" in closed.error_message
    assert live == truth
