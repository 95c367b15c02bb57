"""The composition root: builds the real object graph from settings.

Tests build the same graph with their own settings (and fakes where a unit test needs one).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Engine

from pqsync.db.engine import make_engine
from pqsync.db.migrate import schema_state
from pqsync.intakeq.budget import BudgetUsage, DatabaseBudget
from pqsync.intakeq.client import IntakeQClient
from pqsync.jobs.queue import make_queue
from pqsync.jobs.tasks import Jobs
from pqsync.services.alerts import Alerts, mailer_from_url
from pqsync.services.fair_share import FairShare
from pqsync.services.push import PushService
from pqsync.services.sync import SyncService
from pqsync.services.sync.locks import SyncLocks
from pqsync.services.verify import Verifier
from pqsync.settings import Settings


class NotSetUp(RuntimeError):
    """The database has no schema yet, or one this version of pqsync does not match."""

    def __init__(
        self, message: str = "the database is not set up: run `pqsync db upgrade` first"
    ) -> None:
        super().__init__(message)


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
        """Refuse to work on a database whose schema is not exactly this version's head: a
        schema behind would fail on the first new column, one ahead belongs to a newer
        pqsync (writing to it could lose what the newer version keeps)."""
        state = schema_state(self.engine)
        if state.current is None:
            raise NotSetUp()
        if state.behind:
            raise NotSetUp(
                f"the database schema is behind this version of pqsync ({state.current}, "
                f"needs {state.head}): run `pqsync db upgrade`"
            )
        if state.ahead:
            raise NotSetUp(
                f"the database schema ({state.current}) is newer than this version of pqsync "
                f"knows ({state.head}): run the newer pqsync, or `pqsync db downgrade "
                f"{state.head}` with it"
            )

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
            on_runs_closed=self.runs_closed,
        )

    def verifier(self) -> Verifier:
        """`pqsync verify`: the stored window against IntakeQ's, within the day's budget."""
        self.require_schema()

        def requests_left() -> int:
            usage = self.budget_usage()
            return max(0, usage.daily_limit - usage.day_used)

        return Verifier(
            self.engine,
            self.intakeq,
            clock=self.clock,
            practice_timezone=self.settings.practice_timezone,
            requests_left=requests_left,
            alerts=self.alerts(),
        )

    def alerts(self) -> Alerts:
        """Alerts by mail (`PQSYNC_SMTP_URL`, `PQSYNC_ALERT_EMAILS`), else the log; always
        listed on the staff page."""
        settings = self.settings
        return Alerts(
            self.engine,
            self.clock,
            mailer=mailer_from_url(settings.smtp_url),
            recipients=settings.alert_recipients,
            base_url=settings.base_url,
        )

    def runs_closed(self, run_ids: list[uuid.UUID]) -> None:
        """Dead runs closed by whoever noticed them (a tick, a web request): each may alert."""
        alerts = self.alerts()
        for run_id in run_ids:
            alerts.run_finished(run_id)

    def fair_share(self) -> FairShare:
        """How the day's requests are shared among the people who press Sync."""
        settings = self.settings
        return FairShare(
            self.engine,
            daily_limit=settings.intakeq_daily_limit,
            reserve_share=settings.nightly_reserve_share,
            organization_share=settings.organization_budget_share,
            user_syncs_per_hour=settings.user_syncs_per_hour,
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
