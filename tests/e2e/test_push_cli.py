"""`pqsync appointments book|cancel|reschedule` against the simulator: each reaches IntakeQ,
and the pull afterwards stores the one appointment, as IntakeQ has it."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

import leakcheck
from intakeq_sim import SimConfig, SimulatorServer
from pqsync.db.tables import Appointment
from process_env import process_env

PQSYNC = [sys.executable, "-m", "pqsync.cli"]
START = datetime(2026, 1, 20, 17, 30, tzinfo=UTC)


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(port=0, config=SimConfig(minute_limit=None, daily_limit=None)) as s:
        yield s


def test_book_reschedule_cancel_from_the_command_line(
    sim: SimulatorServer, engine: Engine, database_url: str, tmp_path: Path
) -> None:
    env = process_env(
        sim,
        engine,
        database_url,
        tmp_path,
        PQSYNC_QUEUE_URL=f"sqlite:///{tmp_path}/q.db",
        INTAKEQ_MINUTE_LIMIT="1000",
    )

    def run(*words: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*PQSYNC, *words], env=env, cwd=tmp_path, capture_output=True, text=True
        )
        leakcheck.append(done.stderr)
        return done

    assert run("sync", "org", "first-step-house").returncode == 0
    patient = sim.dataset.clients[0]
    booked = run(
        "appointments",
        "book",
        patient.email,
        "--start",
        START.isoformat(),
        "--practitioner",
        sim.dataset.mapped_practitioners[0].id,
        "--service",
        sim.dataset.services[1].id,
        "--location",
        sim.dataset.locations[0].id,
    )
    assert booked.returncode == 0, booked.stderr
    found = re.search(r"done in IntakeQ, appointment (\S+)", booked.stdout)
    assert found is not None, booked.stdout
    ident = found.group(1)
    assert sim.app.store.get(ident)["ClientId"] == patient.client_id

    moved = datetime(2026, 1, 21, 18, 0, tzinfo=UTC)
    assert run("appointments", "reschedule", ident, "--start", moved.isoformat()).returncode == 0
    assert run("appointments", "cancel", ident, "--reason", "asked to").returncode == 0
    assert sim.app.store.get(ident)["Status"] == "Canceled"
    assert sim.app.store.get(ident)["StartDate"] == int(moved.timestamp() * 1000)

    assert run("sync", "org", "first-step-house").returncode == 0
    with Session(engine) as session:
        rows = session.execute(
            select(Appointment.intakeq_status, Appointment.start_time).where(
                Appointment.pq_appointment_id == ident
            )
        ).all()
    assert [tuple(r) for r in rows] == [("Canceled", moved)]
