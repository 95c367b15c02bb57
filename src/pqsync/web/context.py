"""What the routes share: the composition root's App plus the web layer's own parts."""

from __future__ import annotations

import concurrent.futures
import contextvars
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from pqsync.bootstrap import App
from pqsync.db.tables import Organization
from pqsync.domain.windows import Window
from pqsync.intakeq.budget import BudgetUsage
from pqsync.services.auth import Authenticator, Principal
from pqsync.services.dashboard import Dashboard
from pqsync.services.sync import PreparedRun, SyncResult, SyncService
from pqsync.services.sync_all_plan import SyncAllPlan, sync_all_plan
from pqsync.web.metrics import Metrics
from pqsync.web.render import make_templates

# Whom the cron endpoint's answers are shown to: the clinic, with no user behind it.
SCHEDULER = Principal(
    user_id=uuid.UUID(int=0),
    email="",
    name="nightly schedule",
    role="staff_admin",
    organization_id=None,
    organization_name=None,
    via="cron",
)


@dataclass
class WebContext:
    app: App
    auth: Authenticator
    metrics: Metrics = field(default_factory=Metrics)
    templates: Jinja2Templates = field(default_factory=make_templates)

    @property
    def secure_cookies(self) -> bool:
        return self.app.settings.env != "development"

    def now(self) -> datetime:
        return self.app.clock()

    def dashboard(self, session: Session, viewer: Principal) -> Dashboard:
        return Dashboard(
            session, viewer, now=self.now(), default_timezone=self.app.settings.timezone
        )

    def sync_service(self) -> SyncService:
        return self.app.sync_service()

    def run_sync(self, service: SyncService, prepared: PreparedRun) -> SyncResult:
        """Run a prepared sync to the end, count it, and let the queue see it finished (a
        paused run is rescheduled; a failure may alert)."""
        result = self.app.jobs.carry_out(service, prepared)
        self.metrics.sync_runs.labels(
            scope=result.scope, status=result.status, trigger=prepared.actor.kind
        ).inc()
        return result

    def run_sync_within(
        self, service: SyncService, prepared: PreparedRun, seconds: float
    ) -> SyncResult | None:
        """Run it in a thread of the web process and wait up to `seconds` for its end; None
        when it goes on past them (its progress is in the database, as for a queued run)."""
        future: concurrent.futures.Future[SyncResult] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(self.run_sync(service, prepared))
            except BaseException as exc:  # handed to the request that waits, if it still does
                future.set_exception(exc)

        # A daemon thread: a process that stops does not wait for it; the run's lease then
        # lapses and the run is closed as failed, as a stopped worker's is.
        # The click's context (its request id) goes with it: every log line of the run names it.
        context = contextvars.copy_context()
        threading.Thread(target=context.run, args=(run,), name="pqsync-sync", daemon=True).start()
        try:
            return future.result(timeout=seconds)
        except concurrent.futures.TimeoutError:
            return None

    def run_sync_later(self, prepared: PreparedRun) -> None:
        """Queue it for a worker (the answer is sent at once; progress is in the database)."""
        self.app.jobs.run_later(prepared)

    def budget_usage(self, session: Session) -> BudgetUsage:
        """The IntakeQ budget's use; the page's session hands its connection back first, so a
        request never holds two (under load that would drain the pool)."""
        session.commit()
        return self.app.budget_usage()

    def sync_all_plan(
        self, session: Session, org: Organization, window: Window | None = None
    ) -> SyncAllPlan:
        """What a Sync all of the organisation would cover and cost (the sync's planner)."""
        settings = self.app.settings
        return sync_all_plan(
            self.sync_service(),
            session,
            org,
            self.budget_usage(session),
            minute_limit=settings.intakeq_minute_limit,
            minute_window_seconds=settings.intakeq_minute_window_seconds,
            window=window,
        )
