"""The composition root: builds the real object graph from settings.

Tests build the same graph with their own settings (and fakes where a unit test needs one).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, inspect

from pqsync.db.engine import make_engine
from pqsync.intakeq.budget import BudgetUsage, DatabaseBudget
from pqsync.intakeq.client import IntakeQClient
from pqsync.jobs.queue import make_queue
from pqsync.jobs.tasks import Jobs
from pqsync.services.push import PushService
from pqsync.services.sync import SyncService
from pqsync.services.sync.locks import SyncLocks
from pqsync.settings import Settings


class NotSetUp(RuntimeError):
    """The database has no schema yet."""

    def __init__(self) -> None:
        super().__init__("the database is not set up: run `pqsync db upgrade` first")


def _utcnow() -> datetime:
    return datetime.now(UTC)


# How much longer our budget's windows are than IntakeQ's (see _make_client).
WINDOW_MARGIN = 0.05


@dataclass
class App:
    settings: Settings
    engine: Engine
    clock: Callable[[], datetime] = field(default=_utcnow)
    _client: IntakeQClient | None = None
    _budget: DatabaseBudget | None = None
    _client_lock: threading.Lock = field(default_factory=threading.Lock)
    _jobs: Jobs | None = None

    def require_schema(self) -> None:
        if not inspect(self.engine).has_table("alembic_version"):
            raise NotSetUp()

    @property
    def intakeq(self) -> IntakeQClient:
        with self._client_lock:  # request threads and background runs share one client
            return self._make_client()

    def _make_budget(self) -> DatabaseBudget:
        if self._budget is None:
            window = self.settings.intakeq_minute_window_seconds
            self._budget = DatabaseBudget(
                self.engine,
                self.settings.intakeq_key(),
                minute_limit=self.settings.intakeq_minute_limit,
                daily_limit=self.settings.intakeq_daily_limit,
                # 5% longer than IntakeQ's window: its clock starts when a request arrives,
                # ours when we send it, so an exact window lets the 11th request land early.
                # An answer within that margin needs no re-dating (one write less a request).
                minute_window=timedelta(seconds=window * (1 + WINDOW_MARGIN)),
                settle_within=timedelta(seconds=window * WINDOW_MARGIN),
                clock=self.clock,
            )
        return self._budget

    def _make_client(self) -> IntakeQClient:
        if self._client is None:
            self._client = IntakeQClient(
                self.settings.intakeq_base_url,
                self.settings.intakeq_key(),
                budget=self._make_budget(),
                rate_limit_wait=self.settings.intakeq_minute_window_seconds,
            )
        return self._client

    @property
    def jobs(self) -> Jobs:
        """The queue (`PQSYNC_QUEUE_URL`) with this app's tasks."""
        with self._client_lock:
            if self._jobs is None:
                self._jobs = Jobs(self, make_queue(self.settings.queue_url))
            return self._jobs

    def budget_usage(self) -> BudgetUsage:
        """The IntakeQ key's requests counted in the current minute and 24 hours (shared by
        every process through the database)."""
        with self._client_lock:
            return self._make_budget().usage()

    def sync_service(self) -> SyncService:
        self.require_schema()
        return SyncService(
            self.engine,
            self.intakeq,
            clock=self.clock,
            default_timezone=self.settings.timezone,
            practice_timezone=self.settings.practice_timezone,
            locks=self.sync_locks(),
        )

    def push_service(self) -> PushService:
        """Book, cancel and reschedule in IntakeQ through pqsync."""
        self.require_schema()
        return PushService(
            self.engine,
            lambda: self.intakeq,
            self.sync_service,
            self.clock,
            ZoneInfo(self.settings.practice_timezone),
        )

    def sync_locks(self) -> SyncLocks:
        """Runs' leases on their scopes (`PQSYNC_RUN_LEASE_SECONDS`)."""
        return SyncLocks(
            self.engine, self.clock, lease=timedelta(seconds=self.settings.run_lease_seconds)
        )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._jobs is not None:
            self._jobs.huey.storage.close()
        self.engine.dispose()


def build_app(settings: Settings, *, clock: Callable[[], datetime] = _utcnow) -> App:
    return App(settings=settings, engine=make_engine(settings.database_url), clock=clock)
