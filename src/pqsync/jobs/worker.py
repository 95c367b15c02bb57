"""`pqsync worker`: huey's consumer (job threads) plus its scheduler (the minute tick)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from huey.consumer import Consumer

from pqsync.logging import get_logger

if TYPE_CHECKING:
    from pqsync.bootstrap import App

log = get_logger("pqsync.worker")


# How long a stopping worker waits for its running jobs to reach a page's end and hand back.
SHUTDOWN_TIMEOUT_SECONDS = 60


def make_consumer(app: App, *, workers: int, periodic: bool = True) -> Consumer:
    """huey's consumer with our polling: an idle worker looks at a SQLite or PostgreSQL queue
    at least every second (Redis answers at once). `periodic`: also the minute tick.

    SIGTERM (systemd's stop) stops it gracefully: running syncs hand back at the
    end of their current page (queued again for the next worker), up to
    SHUTDOWN_TIMEOUT_SECONDS; SIGINT or a second SIGTERM stops at once."""
    consumer = app.jobs.huey.create_consumer(
        workers=workers,
        worker_type="thread",
        periodic=periodic,
        initial_delay=0.05,
        backoff=1.5,
        max_delay=1.0,
        scheduler_interval=1,
        graceful_signal="TERM",
        shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS,
    )
    app.jobs.stopping = consumer.stop_flag
    return consumer


def run_worker(app: App, *, workers: int) -> None:
    """Consume until SIGINT/SIGTERM; one tick first, so a missed night is caught up at once."""
    jobs = app.jobs
    jobs.tick()
    consumer = make_consumer(app, workers=workers)
    log.info("worker.started", worker=jobs.worker, workers=workers)
    consumer.run()
