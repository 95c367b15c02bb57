"""`pqsync worker`: huey's consumer (job threads) plus its scheduler (the minute tick)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from huey.consumer import Consumer

from pqsync.logging import get_logger

if TYPE_CHECKING:
    from pqsync.bootstrap import App

log = get_logger("pqsync.worker")


def make_consumer(app: App, *, workers: int, periodic: bool = True) -> Consumer:
    """huey's consumer with our polling: an idle worker looks at a SQLite or PostgreSQL queue
    at least every second (Redis answers at once). `periodic`: also the minute tick."""
    return app.jobs.huey.create_consumer(
        workers=workers,
        worker_type="thread",
        periodic=periodic,
        initial_delay=0.05,
        backoff=1.5,
        max_delay=1.0,
        scheduler_interval=1,
    )


def run_worker(app: App, *, workers: int) -> None:
    """Consume until SIGINT/SIGTERM; one tick first, so a missed night is caught up at once,
    and every pending webhook event's re-fetch queued again (a killed process may have held
    its job)."""
    jobs = app.jobs
    jobs.tick()
    jobs.requeue_overdue_webhooks(every_pending=True)
    consumer = make_consumer(app, workers=workers)
    log.info("worker.started", worker=jobs.worker, workers=workers)
    consumer.run()
