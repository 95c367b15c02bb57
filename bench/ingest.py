"""Benchmark 3: appointments per second ingesting ~100,000 appointments from the simulator
(no latency, no limits) into SQLite and into PostgreSQL, and peak memory; next to a naive
baseline that selects then inserts each appointment (one transaction each), and to the
ceiling IntakeQ itself sets (100 a request, 10 requests a minute: about 17 a second).
Target: at least 100x that ceiling (1,700/s), with memory flat as the size grows.

Each measurement runs in a fresh child process (so peak RSS is that run's alone); the
simulator is another process. Usage: python bench/ingest.py [--sizes 20000,100000]
[--databases sqlite,postgresql] [--baseline-size N]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from common import (
    directory_of,
    fresh_database,
    import_demo_directory,
    make_app,
    row,
    simulator_process,
)
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pqsync.db.engine import make_engine
from pqsync.db.tables import Appointment, Patient
from pqsync.domain.status import map_status
from pqsync.domain.windows import Window
from pqsync.intakeq.models import Appointment as IntakeQAppointment
from pqsync.intakeq.models import AppointmentQuery

FSH_SHARE = 0.85  # the simulator's default share of First Step House appointments
# Our CPU: this process's, all threads; machine busy: all cores, all processes.
COLUMNS = ("stored", "appts/s", "peak RSS MB", "our CPU s", "machine busy")
WIDTHS = (56, 10, 10, 13, 11, 14)
PATIENTS = 2000


class Meter:
    """Wall time, this process's CPU time (all threads) and how busy the whole machine was
    (every core, every process: the simulator and the database server too)."""

    def __init__(self) -> None:
        self._machine = self._machine_times()
        self._cpu = time.process_time()
        self._wall = time.perf_counter()

    @staticmethod
    def _machine_times() -> tuple[float, float]:
        """(busy, total) jiffies of all cores since boot, from /proc/stat (Linux)."""
        with open("/proc/stat") as stat:
            fields = [int(f) for f in stat.readline().split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields) - idle, sum(fields)

    def stop(self) -> dict[str, float]:
        busy, total = self._machine_times()
        return {
            "seconds": time.perf_counter() - self._wall,
            "cpu_seconds": time.process_time() - self._cpu,
            "machine_busy": (busy - self._machine[0]) / max(total - self._machine[1], 1),
        }


# IntakeQ's own pace: 100 appointments a request, 10 requests a minute.
API_CEILING = 100 * 10 / 60


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def window_of(root: str) -> Window:
    import httpx

    today = date.fromisoformat(httpx.get(f"{root}/_sim/info").json()["today"])
    # The scaled data set spreads appointments over 120 days either side of today.
    return Window(today - timedelta(days=120), today + timedelta(days=120))


def ours(url: str, root: str) -> dict[str, Any]:
    engine = make_engine(url)
    app = make_app(engine, f"{root}/api/v1")
    service = app.sync_service()
    window = window_of(root)
    meter = Meter()
    result = service.sync_organization("first-step-house", window=window)
    measured = meter.stop()
    assert result.status == "success", result.error
    app.close()
    return {
        "stored": result.summary.new,
        **measured,
        "requests": result.requests_made,
        "plan": result.plan,
    }


def baseline(url: str, root: str, limit: int) -> dict[str, Any]:
    """Select, then insert or update, one appointment at a time, committing each."""
    engine = make_engine(url)
    app = make_app(engine, f"{root}/api/v1")
    window = window_of(root)
    with Session(engine) as session:
        by_email = {p.email: p.id for p in session.scalars(select(Patient))}
    stored = 0
    meter = Meter()
    query = AppointmentQuery(start_date=window.start, end_date=window.end)
    with Session(engine) as session:
        for page in app.intakeq.appointment_pages(query):
            for record in page:
                if not isinstance(record, IntakeQAppointment):
                    continue
                patient_id = by_email.get(record.client_email or "")
                if patient_id is None:
                    continue
                existing = session.scalar(
                    select(Appointment).filter_by(pq_appointment_id=record.id)
                )
                values = {
                    "patient_id": patient_id,
                    "status": map_status(record.status),
                    "intakeq_status": record.status,
                    "start_time": record.start,
                    "end_time": record.end,
                    "intakeq_client_id": record.client_id,
                    "intakeq_practitioner_id": record.practitioner_id,
                    "location_name": record.location_name,
                    "extra": record.metadata,
                    "intakeq_last_modified": record.last_modified,
                }
                if existing is None:
                    session.add(Appointment(id=uuid.uuid4(), pq_appointment_id=record.id, **values))
                else:
                    for key, value in values.items():
                        setattr(existing, key, value)
                session.commit()
                stored += 1
            if stored >= limit:
                break
    measured = meter.stop()
    app.close()
    return {"stored": stored, **measured}


def child(args: argparse.Namespace) -> None:
    with fresh_database(args.database) as url:
        engine = make_engine(url)
        import_demo_directory(engine, directory_of(args.root))
        engine.dispose()
        rss_before = peak_rss_mb()
        if args.method == "ours":
            figures = ours(url, args.root)
        else:
            figures = baseline(url, args.root, args.limit)
        check = make_engine(url)
        with Session(check) as session:
            figures["rows"] = session.scalar(select(func.count()).select_from(Appointment))
        check.dispose()
    figures["peak_rss_mb"] = peak_rss_mb()
    figures["rss_before_mb"] = rss_before
    print(json.dumps(figures))


def run_child(root: str, database: str, method: str, limit: int) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            "--root",
            root,
            "--database",
            database,
            "--method",
            method,
            "--limit",
            str(limit),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        sys.exit(f"the {method} run on {database} failed:\n{out.stderr[-2000:]}")
    figures: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--root")
    parser.add_argument("--database", default="sqlite")
    parser.add_argument("--method", default="ours")
    parser.add_argument("--limit", type=int, default=10**9)
    parser.add_argument("--sizes", default="20000,100000")
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--baseline-size", type=int, default=20_000)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    print(
        "Benchmark 3: ingesting appointments from the simulator (no latency), "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    )
    print(row("run", *COLUMNS, widths=WIDTHS))
    for size in [int(s) for s in args.sizes.split(",")]:
        total = int(size / FSH_SHARE) + 1
        sim_args = (
            "--appointments",
            str(total),
            "--patients",
            str(PATIENTS),
            "--minute-limit",
            "0",
            "--daily-limit",
            "0",
        )
        with simulator_process(*sim_args) as root:
            for database in args.databases.split(","):
                label = f"pqsync, {database}, {size:,} target"
                rate = measure(root, database, "ours", 10**9, label)
                if size != max(int(s) for s in args.sizes.split(",")):
                    continue
                label = f"baseline select-then-insert, {database}"
                base_rate = measure(root, database, "baseline", args.baseline_size, label)
                print(
                    f"  on {database}: {rate / base_rate:.1f}x the baseline; "
                    f"{rate / API_CEILING:.0f}x IntakeQ's ceiling of {API_CEILING:.0f}/s "
                    f"(target at least 100x, {100 * API_CEILING:,.0f}/s)",
                    flush=True,
                )


def measure(root: str, database: str, method: str, limit: int, label: str) -> float:
    """Run one measurement in a child process, print its row, return appointments/s."""
    figures = run_child(root, database, method, limit)
    rate: float = figures["stored"] / figures["seconds"]
    print(
        row(
            label,
            figures["stored"],
            f"{rate:,.0f}",
            f"{figures['peak_rss_mb']:.0f}",
            f"{figures['cpu_seconds']:.1f}",
            f"{100 * figures['machine_busy']:.0f}%",
            widths=WIDTHS,
        ),
        flush=True,
    )
    return rate


if __name__ == "__main__":
    main()
