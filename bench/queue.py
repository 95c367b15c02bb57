"""Benchmark 5: the queue's overhead, from enqueueing a patient sync to its start.

200 patient syncs (the demo practice's 12 patients in turn) are each prepared, enqueued and
waited for, with an in-process `pqsync worker` consumer (2 threads, the worker's own polling
settings) on SQLite storage and on Redis, in one run. The baseline is the thread pool the
web process used before the queue (a hand-off to a ThreadPoolExecutor). Prints p50 and p95.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file's name is the (`bench/queue.py`); it must not stand in for the standard
# library's `queue`, so its folder comes last on the path.
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH] + [str(_BENCH)]

import statistics  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from typing import Any  # noqa: E402

from common import fresh_database, import_demo_directory, make_app, row  # noqa: E402
from huey import signals  # noqa: E402
from sqlalchemy import select  # noqa: E402

from intakeq_sim import SimConfig, SimulatorServer, demo_directory  # noqa: E402
from pqsync.db.engine import make_engine  # noqa: E402
from pqsync.db.tables import Patient  # noqa: E402
from pqsync.jobs.worker import make_consumer  # noqa: E402

JOBS = 200
REDIS = "redis://127.0.0.1:6379/0"


def percentiles(waits: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(waits, n=100)
    return cuts[49] * 1000, cuts[94] * 1000


def through_queue(queue_url: str, base_url: str, db_url: str) -> list[float]:
    engine = make_engine(db_url)
    app = make_app(engine, base_url, PQSYNC_QUEUE_URL=queue_url)
    with engine.connect() as conn:
        patients = [str(p) for p in conn.scalars(select(Patient.id).order_by(Patient.id))]
    started = threading.Event()
    finished = threading.Event()
    started_at: dict[str, float] = {}

    def on_executing(signal: str, task: Any, *args: Any) -> None:
        started_at["t"] = time.perf_counter()
        started.set()

    def on_done(signal: str, task: Any, *args: Any) -> None:
        finished.set()

    huey = app.jobs.huey
    huey.signal(signals.SIGNAL_EXECUTING)(on_executing)
    huey.signal(signals.SIGNAL_COMPLETE, signals.SIGNAL_ERROR)(on_done)
    consumer = make_consumer(app, workers=2)
    consumer.start()
    waits = []
    try:
        service = app.sync_service()
        for number in range(JOBS):
            prepared = service.prepare_patient(patients[number % len(patients)])
            started.clear()
            finished.clear()
            enqueued = time.perf_counter()
            app.jobs.run_later(prepared)
            assert started.wait(30) and finished.wait(60), "the job did not run"
            waits.append(started_at["t"] - enqueued)
    finally:
        consumer.stop(graceful=True)
        app.close()
    return waits


def through_thread_pool(run: Callable[[], None]) -> list[float]:
    waits = []
    began: list[float] = []

    def job() -> None:
        began.append(time.perf_counter())
        run()

    with ThreadPoolExecutor(max_workers=2) as pool:
        for _ in range(JOBS):
            enqueued = time.perf_counter()
            pool.submit(job).result()
            waits.append(began[-1] - enqueued)
    return waits


def main() -> None:
    config = SimConfig(minute_limit=None, daily_limit=None)
    with SimulatorServer(port=0, config=config) as sim, fresh_database("sqlite") as db_url:
        import_demo_directory(make_engine(db_url), demo_directory(sim.dataset))
        results = {}
        engine = make_engine(db_url)
        app = make_app(engine, sim.base_url)
        service = app.sync_service()
        with engine.connect() as conn:
            patient = str(conn.scalar(select(Patient.id).limit(1)))
        results["baseline: thread pool (before the queue)"] = through_thread_pool(
            lambda: service.sync_patient(patient) and None
        )
        app.close()
        with tempfile.TemporaryDirectory() as folder:
            results["huey, SQLite storage"] = through_queue(
                f"sqlite:///{folder}/queue.db", sim.base_url, db_url
            )
        name = f"pqsync-bench-{uuid.uuid4().hex[:8]}"
        try:
            results["huey, Redis"] = through_queue(f"{REDIS}?queue={name}", sim.base_url, db_url)
        except Exception as exc:  # no Redis: say so, keep the other figures
            print(f"Redis skipped: {type(exc).__name__}", file=sys.stderr)
    print(f"Enqueue to start of a patient sync, {JOBS} jobs one after another")
    print(row("", "p50 (ms)", "p95 (ms)", "max (ms)"))
    for label, waits in results.items():
        p50, p95 = percentiles(waits)
        print(row(label, f"{p50:.2f}", f"{p95:.2f}", f"{max(waits) * 1000:.2f}"))


if __name__ == "__main__":
    main()
