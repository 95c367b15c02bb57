"""`pqsync serve` and `pqsync worker` as real processes receiving the simulator's webhooks,
and the comparison of what we store with what the simulator holds."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

import leakcheck
from intakeq_sim import SimulatorServer
from pqsync.db.tables import Appointment, Patient
from process_env import process_env

WEBHOOK_TOKEN = "webhook-test-token-0123456789abcdef"
PQSYNC = [sys.executable, "-m", "pqsync.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Stack:
    """One web process and one worker over one database and one SQLite queue file."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.port = free_port()
        self.processes: list[tuple[subprocess.Popen[bytes], Path]] = []

    @property
    def webhook_url(self) -> str:
        return (
            f"http://127.0.0.1:{self.port}/api/webhooks/practiceq/appointments"
            f"?token={WEBHOOK_TOKEN}"
        )

    def start(self, *, worker: bool = True) -> None:
        self._spawn("serve", ["serve", "--port", str(self.port)])
        if worker:
            self._spawn("worker", ["worker", "--workers", "2"])
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=5)
                return
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the web process did not start"
                time.sleep(0.1)

    def _spawn(self, name: str, args: list[str]) -> None:
        log = self.logs / f"{name}-{len(self.processes)}.err"
        with log.open("w") as stderr:
            process = subprocess.Popen(
                [*PQSYNC, *args],
                env=self.env,
                cwd=self.logs,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        self.processes.append((process, log))

    def kill(self) -> None:
        """SIGKILL every process: nothing gets to finish or flush."""
        for process, _ in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()

    def stop(self) -> None:
        for process, log in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            leakcheck.append(log.read_text())
        self.processes.clear()


def stack_env(
    sim: SimulatorServer,
    engine: Engine,
    database_url: str,
    home: Path,
    coalesce_seconds: float,
) -> dict[str, str]:
    """The environment of both processes: the demo directory imported, a SQLite queue
    file, our webhook token, the request limits out of the way of the test."""
    return process_env(
        sim,
        engine,
        database_url,
        home,
        PQSYNC_QUEUE_URL=f"sqlite:///{home}/queue.db",
        PQSYNC_WEBHOOK_TOKEN=WEBHOOK_TOKEN,
        PQSYNC_WEBHOOK_COALESCE_SECONDS=str(coalesce_seconds),
        INTAKEQ_MINUTE_LIMIT="100000",
        INTAKEQ_DAILY_LIMIT="100000",
    )


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait for background work to reach a state (not a retry of the test)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def our_client_ids(engine: Engine) -> set[int]:
    with Session(engine) as session:
        return {
            int(c)
            for c in session.scalars(
                select(Patient.intakeq_client_id).where(Patient.intakeq_client_id.is_not(None))
            )
        }


def mismatches(engine: Engine, sim: SimulatorServer, days: int = 90) -> dict[str, list[str]]:
    """What we store against the simulator's truth, for our patients' live appointments in
    the window (90 days back and ahead): missing, stale (status or start), extra (stored as
    live but deleted or unknown in IntakeQ), and duplicates (an IntakeQ id stored twice)."""
    clients = our_client_ids(engine)
    zone = ZoneInfo(sim.dataset.timezone)
    today = datetime.now(zone).date()
    low = datetime.combine(today - timedelta(days=days), datetime.min.time(), zone)
    high = datetime.combine(today + timedelta(days=days + 1), datetime.min.time(), zone)
    truth: dict[str, dict[str, Any]] = {
        a["Id"]: a for a in sim.app.store.snapshot(include_deleted=True) if a["ClientId"] in clients
    }
    with Session(engine) as session:
        stored = session.execute(
            select(
                Appointment.pq_appointment_id,
                Appointment.intakeq_status,
                Appointment.start_time,
                Appointment.deleted_at,
            )
        ).all()
    ids = [row[0] for row in stored]
    out: dict[str, list[str]] = {
        "missing": [],
        "stale": [],
        "extra": [],
        "duplicates": sorted({i for i in ids if ids.count(i) > 1}),
    }
    ours = {row[0]: row for row in stored}
    for ident, record in truth.items():
        start = datetime.fromtimestamp(record["StartDate"] / 1000, UTC)
        live = not record["Deleted"]
        row = ours.get(ident)
        if live and low <= start < high:
            if row is None or row[3] is not None:
                out["missing"].append(ident)
            elif row[1] != record["Status"] or row[2] != start:
                out["stale"].append(ident)
        elif not live and row is not None and row[3] is None:
            out["extra"].append(ident)
    out["extra"].extend(i for i, row in ours.items() if i not in truth and row[3] is None)
    return out
