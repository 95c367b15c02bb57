"""Backups: `pqsync db backup` taken while a sync writes is one consistent snapshot
(whole pages only); restored, and synced again, the database equals IntakeQ's data. Every
database, queue and backup file is readable by its owner only."""

from __future__ import annotations

import stat
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
from pqsync.db.backup import backup as take_backup
from pqsync.db.engine import make_engine
from pqsync.db.tables import Appointment, PatientActivity
from process_env import process_env

ORG = "first-step-house"
PQSYNC = [sys.executable, "-m", "pqsync.cli"]


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    config = SimConfig(minute_limit=None, daily_limit=None, latency_ms=250)
    with SimulatorServer(port=0, config=config) as server:
        yield server


def run(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*PQSYNC, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )
    leakcheck.append(result.stderr)
    return result


def counts(engine: Engine) -> tuple[int, int]:
    with Session(engine) as session:
        rows = session.scalar(select(func.count()).select_from(Appointment)) or 0
        created = session.scalar(
            select(func.count())
            .select_from(PatientActivity)
            .where(PatientActivity.activity_type == "appointment_created")
        )
    return rows, created or 0


def live_ids(engine: Engine) -> set[str]:
    with Session(engine) as session:
        return set(
            session.scalars(
                select(Appointment.pq_appointment_id).where(Appointment.deleted_at.is_(None))
            )
        )


def private(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_backup_taken_while_a_sync_writes_restores_to_intakeqs_data(
    sim: SimulatorServer, engine: Engine, database_url: str, tmp_path: Path
) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL is backed up with pg_dump (README); this is SQLite's backup")
    env = process_env(sim, engine, database_url, tmp_path, INTAKEQ_MINUTE_LIMIT="1000")
    backup = tmp_path / "backup.db"
    writer = subprocess.Popen(
        [*PQSYNC, "sync", "org", ORG, "--json"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while counts(engine)[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert writer.poll() is None, "the sync ended before the backup"
        # What `pqsync db backup` does, here so that it lands inside the run.
        take_backup(database_url, backup)
        still_writing = writer.poll() is None
    finally:
        writer.wait(timeout=120)
    assert still_writing
    assert private(backup)

    # Restore into another database, as onto a new machine.
    restored_url = f"sqlite:///{tmp_path / 'restored' / 'pqsync.db'}"
    elsewhere = {**env, "PQSYNC_DATABASE_URL": restored_url}
    unconfirmed = run(elsewhere, tmp_path, "db", "restore", str(backup))
    restored = run(elsewhere, tmp_path, "db", "restore", str(backup), "--yes")
    assert unconfirmed.returncode == 1
    assert restored.returncode == 0, restored.stderr
    assert private(tmp_path / "restored" / "pqsync.db")
    restored_engine = make_engine(restored_url)
    rows, created = counts(restored_engine)
    # One consistent snapshot, mid-run: whole pages, each row with its audit entry.
    assert 0 < rows == created

    synced = run(elsewhere, tmp_path, "sync", "org", ORG, "--json")
    assert synced.returncode == 0, synced.stderr[-500:]

    start, end = sim.dataset.default_window()
    fsh = {c.client_id for c in sim.dataset.fsh_patients}
    truth = {a.id for a in sim.dataset.appointments_in_window(start, end, fsh)}
    assert live_ids(restored_engine) == truth
    assert live_ids(engine) == truth  # the live database, its sync finished, agrees
    restored_engine.dispose()


def test_backup_refuses_an_existing_file_and_restore_a_file_that_is_no_database(
    engine: Engine, database_url: str, tmp_path: Path, sim: SimulatorServer
) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's backup")
    env = process_env(sim, engine, database_url, tmp_path)
    taken = tmp_path / "taken.db"
    taken.write_text("x")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database" * 100)

    over = run(env, tmp_path, "db", "backup", str(taken))
    bad = run(env, tmp_path, "db", "restore", str(junk), "--yes")

    made = run(env, tmp_path, "db", "backup", str(tmp_path / "fresh.db"))
    assert made.returncode == 0, made.stderr
    assert private(tmp_path / "fresh.db")
    assert over.returncode == 1 and "exists" in over.stderr
    assert bad.returncode == 1
    assert counts(engine) == (0, 0)  # the live database untouched


def test_new_database_and_queue_files_are_private(tmp_path: Path) -> None:
    from pqsync.jobs.queue import make_queue

    engine = make_engine(f"sqlite:///{tmp_path / 'var' / 'new.db'}")
    with engine.connect() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        conn.commit()
        modes = {f.name: private(f) for f in (tmp_path / "var").iterdir()}
        make_queue(f"sqlite:///{tmp_path / 'var' / 'queue.db'}").storage.close()
    engine.dispose()

    assert set(modes) >= {"new.db", "new.db-wal", "new.db-shm"}
    assert all(modes.values()), modes
    assert private(tmp_path / "var" / "queue.db")
