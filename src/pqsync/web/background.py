"""Work done after the answer: `Prefer: respond-async` syncs and webhook re-fetches.

A small thread pool owned by the app; a huey queue (jobs/) is the later step, so that work
survives a restart and spreads over machines.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait

from pqsync.logging import get_logger
from pqsync.web.errors import error_facts

log = get_logger("pqsync.web.background")


class BackgroundWork:
    def __init__(self, workers: int = 2) -> None:
        self._workers = workers
        self._pool = self._new_pool()
        self._pending: set[Future[None]] = set()
        self._lock = threading.Lock()
        self._stopped = False

    def _new_pool(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="pqsync-bg")

    def start(self) -> None:
        """Take work again after a shutdown (an app whose lifespan starts a second time)."""
        if self._stopped:
            self._pool = self._new_pool()
            self._stopped = False

    def submit(self, name: str, job: Callable[[], object]) -> None:
        """Run `job` soon on a worker thread; a failure is logged, never raised."""
        future = self._pool.submit(self._guarded, name, job)
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._forget)

    def _forget(self, future: Future[None]) -> None:
        with self._lock:
            self._pending.discard(future)

    @staticmethod
    def _guarded(name: str, job: Callable[[], object]) -> None:
        try:
            job()
        except Exception as exc:
            log.error("background.failed", job=name, **error_facts(exc))

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until nothing submitted is still running; False on timeout."""
        while True:
            with self._lock:
                pending = set(self._pending)
            if not pending:
                return True
            _done, not_done = wait(pending, timeout=timeout)
            if not_done:
                return False

    def shutdown(self) -> None:
        self._stopped = True
        self._pool.shutdown(wait=True, cancel_futures=False)
