"""The queue's tasks, bound to one composition root: run a prepared sync, start a sync
later (budget paused it), re-fetch for a webhook, and the minute tick of the schedule."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from huey import Huey, crontab
from sqlalchemy import Engine, update
from sqlalchemy.dialects import postgresql, sqlite

from pqsync.db.tables import SyncLog, WorkerHeartbeat
from pqsync.domain.windows import Window
from pqsync.logging import get_logger
from pqsync.services.alerts import Alerts, SmtpError, SmtpMailer
from pqsync.services.digest import send_digests
from pqsync.services.housekeeping import prune
from pqsync.services.schedule import NightlySchedule
from pqsync.services.sync import SCHEDULE_ACTOR, Actor, PreparedRun, SyncResult, SyncService
from pqsync.services.sync.locks import SyncInProgress, SyncLocks, default_holder
from pqsync.services.sync.results import HandedBack, SyncInputError
from pqsync.services.webhooks import Admission, WebhookGate
from pqsync.settings import SettingsError

if TYPE_CHECKING:
    from pqsync.bootstrap import App

log = get_logger("pqsync.jobs")

PAUSED_MESSAGE = "paused: IntakeQ's daily limit; resumes at {at}"


def is_paused(result: SyncResult) -> bool:
    """A run that stopped at the day's request limit: paused, not failed."""
    return result.status == "paused" or (
        result.status == "failed" and result.error_kind == "budget"
    )


def paused_message(frees_at: datetime | None) -> str:
    at = frees_at.strftime("%H:%M UTC") if frees_at is not None else "when budget frees up"
    return PAUSED_MESSAGE.format(at=at)


class Jobs:
    """Tasks on `huey`; the web process enqueues, `pqsync worker` runs them."""

    def __init__(self, app: App, huey: Huey, *, worker: str | None = None) -> None:
        self.app = app
        self.huey = huey
        self.worker = worker or default_holder()
        # Set when the worker is stopping (SIGTERM): running syncs hand back at a page's end.
        self.stopping = threading.Event()
        self._run = huey.task(name="run_sync")(self._run_prepared)
        self._start = huey.task(name="start_sync")(self._start_scope)
        self._refetch = huey.task(name="webhook_refetch")(self._webhook_refetch)
        huey.periodic_task(crontab(), name="tick")(self.tick)

    @property
    def engine(self) -> Engine:
        return self.app.engine

    def alerts(self) -> Alerts:
        settings = self.app.settings
        return Alerts(
            self.engine,
            self.app.clock,
            mailer=_mailer(settings.smtp_url),
            recipients=settings.alert_recipients,
            base_url=settings.base_url,
        )

    def schedule(self) -> NightlySchedule:
        return NightlySchedule(self.engine, self.app.clock, self.worker)

    def locks(self) -> SyncLocks:
        return self.app.sync_locks()

    # -- enqueueing (any process) ----------------------------------------------------------

    def run_later(self, prepared: PreparedRun) -> None:
        """Queue a prepared run (it holds its scope; progress is in its sync_logs row)."""
        self._run(prepared)

    def webhook_gate(self) -> WebhookGate:
        settings = self.app.settings
        return WebhookGate(
            self.engine,
            self.app.clock,
            practice_id=settings.intakeq_practice_id,
            daily_limit=settings.intakeq_daily_limit,
            budget_share=settings.webhook_budget_share,
            coalesce_for=timedelta(seconds=settings.webhook_coalesce_seconds),
        )

    def refetch_later(
        self, patient_id: uuid.UUID | None, appointment_id: str | None, admission: Admission
    ) -> None:
        """Queue a webhook's re-fetch after the admission's delay; events of its key that
        arrive meanwhile join it."""
        self._refetch.schedule(
            args=(patient_id, appointment_id, admission.key, admission.received_at),
            delay=admission.delay_seconds,
        )

    def pending(self) -> int:
        return int(self.huey.pending_count())

    def drain(self, *, ahead: timedelta = timedelta(0)) -> int:
        """Run the tasks queued now, in this thread, and the delayed ones due within `ahead`
        of the machine's clock (tests and `pqsync worker --drain`); what they queue in turn
        waits for the next drain."""
        due_by = datetime.now(UTC).replace(tzinfo=None) + ahead  # huey's clock: naive UTC
        done = 0
        for _ in range(self.pending()):
            task = self.huey.dequeue()
            if task is None:
                break
            if not self.huey.ready_to_run(task, due_by):
                self.huey.add_schedule(task)  # as the consumer does with a task not yet due
                continue
            self.huey.execute(task, due_by)
            done += 1
        for task in self.huey.read_schedule(due_by):
            self.huey.execute(task, due_by)
            done += 1
        return done

    # -- tasks (the worker) ------------------------------------------------------------------

    def _run_prepared(self, prepared: PreparedRun) -> None:
        if not self.locks().still_holds(prepared.scope_key, prepared.run_id):
            # Waited in the queue past its lease: closed as stopped, its scope free again.
            log.warning("job.run_lost_its_lease", run_id=str(prepared.run_id))
            return
        service = self.app.sync_service()
        self.finished(prepared, service.run(prepared, progress=self._check_stopping))

    def _check_stopping(self, _label: str, _done: int, _total: int | None) -> None:
        if self.stopping.is_set():
            raise HandedBack()

    def finished(self, prepared: PreparedRun, result: SyncResult) -> None:
        """After a run: queue again one handed back by a stopping worker (the next worker
        carries it out), reschedule one the day's budget paused, then alerts."""
        if result.error_kind == "handed_back":
            self._start(prepared.scope, _scope_ref(prepared), prepared.window, prepared.actor)
            log.info("job.handed_back", run_id=str(prepared.run_id), scope=prepared.scope)
            return
        if is_paused(result) and result.budget_frees_at is not None:
            message = paused_message(result.budget_frees_at)
            with self.engine.begin() as conn:
                conn.execute(
                    update(SyncLog).where(SyncLog.id == result.run_id).values(error_message=message)
                )
            self._start.schedule(
                args=(prepared.scope, _scope_ref(prepared), prepared.window, prepared.actor),
                # A delay, not an eta: huey's clock is the machine's, ours may be another.
                delay=max(0.0, (result.budget_frees_at - self.app.clock()).total_seconds()),
            )
            log.info("job.paused", run_id=str(prepared.run_id), message=message)
        self.alerts().run_finished(result.run_id)

    def _start_scope(self, scope: str, ref: str | None, window: Window, actor: Actor) -> None:
        service = self.app.sync_service()
        try:
            prepared = _prepare(service, scope, ref, window, actor)
        except (SyncInProgress, SyncInputError) as exc:
            log.info("job.start_skipped", scope=scope, reason=type(exc).__name__)
            return
        self.finished(prepared, service.run(prepared, progress=self._check_stopping))

    def _webhook_refetch(
        self,
        patient_id: uuid.UUID | None,
        appointment_id: str | None,
        key: str,
        since: datetime,
    ) -> None:
        """Re-fetch the one appointment the events named, else the whole patient."""
        named = self.webhook_gate().appointments_since(key, since) or {appointment_id}
        only = next(iter(named)) if len(named) == 1 else None
        service = self.app.sync_service()
        webhook = Actor("webhook")
        try:
            if only is not None:
                prepared = service.prepare_appointment(only, patient_hint=patient_id, actor=webhook)
            elif patient_id is not None:
                prepared = service.prepare_patient(str(patient_id), actor=webhook)
            else:
                return
        except (SyncInProgress, SyncInputError) as exc:
            # The running sync or the nightly one picks the change up.
            log.info("webhook.sync_skipped", reason=type(exc).__name__)
            return
        self.finished(prepared, service.run(prepared, progress=self._check_stopping))

    # -- the schedule -----------------------------------------------------------------------

    def start_nightly(
        self, actor: Actor = SCHEDULE_ACTOR
    ) -> tuple[SyncService, PreparedRun] | None:
        """Claim the organisations whose 03:00 has come and prepare one nightly run for them
        (the practice is fetched once for all); None when every due night is claimed.
        Raises SyncInProgress (claims given back) when a nightly run is going."""
        schedule = self.schedule()
        claims = schedule.claim_due()
        if not claims:
            return None
        try:
            service = self.app.sync_service()
            prepared = service.prepare_nightly(actor=actor)
        except BaseException:
            schedule.release(claims)
            raise
        schedule.attach(claims, prepared.run_id)
        log.info("schedule.nightly_started", run_id=str(prepared.run_id), organizations=len(claims))
        return service, prepared

    def tick(self) -> None:
        """Every minute on every worker: heartbeat, close stale runs, report missed nights,
        start due nightly runs, prune."""
        now = self.app.clock()
        self.heartbeat(now)
        alerts = self.alerts()
        for run_id in self.locks().reap_expired():
            alerts.run_finished(run_id)
        schedule = self.schedule()
        for missed in schedule.missed():
            alerts.nightly_missed(
                missed.organization_id, missed.organization_name, missed.local_day
            )
        try:
            started = self.start_nightly()
        except SyncInProgress:
            started = None  # the next tick claims again
        except Exception as exc:
            started = None
            reason = str(exc) if isinstance(exc, SettingsError) else type(exc).__name__
            log.error("schedule.nightly_cannot_start", reason=reason)
            alerts.nightly_cannot_start(reason)
        else:
            if started is not None:
                alerts.nightly_could_start()
        if started is not None:
            self.run_later(started[1])
        send_digests(self.engine, self.app.clock, alerts.mailer, self.app.settings.base_url)
        prune(self.engine, now, log_retention_days=self.app.settings.log_retention_days)

    def heartbeat(self, now: datetime) -> None:
        """Record that this worker is alive (`/healthz`)."""
        with self.engine.begin() as conn:
            dialect_insert = (
                postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
            )
            statement = dialect_insert(WorkerHeartbeat).values(worker=self.worker, seen_at=now)
            conn.execute(
                statement.on_conflict_do_update(index_elements=["worker"], set_={"seen_at": now})
            )


def _mailer(smtp_url: str | None) -> SmtpMailer | None:
    """The alert mailer; a malformed URL (refused at start) leaves alerts on the staff page
    rather than failing the tick that raises them."""
    if not smtp_url:
        return None
    try:
        return SmtpMailer.from_url(smtp_url)
    except (SmtpError, ValueError):
        log.error("alert.smtp_url_malformed")
        return None


def _scope_ref(prepared: PreparedRun) -> str | None:
    if prepared.scope == "patient":
        return str(prepared.patient_ids[0])
    if prepared.scope == "organization":
        return str(prepared.organization_id)
    return None


def _prepare(
    service: SyncService, scope: str, ref: str | None, window: Window, actor: Actor
) -> PreparedRun:
    if scope == "patient" and ref is not None:
        return service.prepare_patient(ref, window=window, actor=actor)
    if scope == "organization" and ref is not None:
        return service.prepare_organization(ref, window=window, actor=actor)
    return service.prepare_nightly(actor=actor)
