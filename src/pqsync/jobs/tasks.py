"""The queue's tasks, bound to one composition root: run a prepared sync, start a sync
later (budget paused it), re-fetch for a webhook, and the minute tick of the schedule."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from huey import Huey, crontab
from sqlalchemy import Engine, update
from sqlalchemy.dialects import postgresql, sqlite

from pqsync.db.tables import SyncLog, WorkerHeartbeat
from pqsync.domain.windows import Window
from pqsync.logging import get_logger
from pqsync.services.alerts import Alerts, SmtpMailer
from pqsync.services.housekeeping import prune
from pqsync.services.schedule import NightlySchedule
from pqsync.services.sync import SCHEDULE_ACTOR, Actor, PreparedRun, SyncResult, SyncService
from pqsync.services.sync.locks import SyncInProgress, SyncLocks, default_holder
from pqsync.services.sync.results import SyncInputError
from pqsync.services.webhooks import Admission, WebhookGate, patient_of_key

if TYPE_CHECKING:
    from pqsync.bootstrap import App

log = get_logger("pqsync.jobs")

PAUSED_MESSAGE = "paused: IntakeQ's daily limit; resumes at {at}"
# A webhook's re-fetch that meets a running sync of its patient tries again this much later,
# so that it runs after that sync (which may have fetched before the change).
BUSY_RETRY_SECONDS = 2.0
# How long past its due moment a pending webhook event waits before a worker's tick queues
# its re-fetch again (its job was lost with a process, or is stuck).
OVERDUE_GRACE = timedelta(seconds=30)


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
        self._run = huey.task(name="run_sync")(self._run_prepared)
        self._start = huey.task(name="start_sync")(self._start_scope)
        self._refetch = huey.task(name="webhook_refetch")(self._webhook_refetch)
        self._push = huey.task(name="push")(self._send_push)
        huey.periodic_task(crontab(), name="tick")(self.tick)

    @property
    def engine(self) -> Engine:
        return self.app.engine

    def alerts(self) -> Alerts:
        settings = self.app.settings
        return Alerts(
            self.engine,
            self.app.clock,
            mailer=SmtpMailer.from_url(settings.smtp_url) if settings.smtp_url else None,
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
        self.finished(prepared, service.run(prepared))

    def finished(self, prepared: PreparedRun, result: SyncResult) -> None:
        """After a run: reschedule one the day's budget paused, then alerts."""
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
        self.finished(prepared, service.run(prepared))

    def push_later(self, push_id: uuid.UUID, attempts: int = 0) -> None:
        """Queue a push's (next) try: at once, then after 5 s, 10 s, ... at most 5 minutes."""
        delay = 0.0 if attempts == 0 else min(300.0, 5.0 * 2 ** (attempts - 1))
        self._push.schedule(args=(push_id,), delay=delay)

    def _send_push(self, push_id: uuid.UUID) -> None:
        outcome = self.app.push_service().send(push_id)
        if outcome is not None and outcome.retry:
            self.push_later(push_id, outcome.attempts)

    def requeue_overdue_webhooks(self, *, every_pending: bool = False) -> int:
        """Queue again the re-fetch of every key whose pending events are overdue (their job
        died with a process), or of every pending key (a worker starting: the queue may have
        lost what a killed process held); a duplicate job finds nothing pending and stops."""
        gate = self.webhook_gate()
        grace = -gate.coalesce_for if every_pending else OVERDUE_GRACE
        delay = gate.coalesce_for.total_seconds() if every_pending else 0.0
        keys = gate.overdue_keys(grace)
        for key in keys:
            self._refetch.schedule(args=(patient_of_key(key), None, key, None), delay=delay)
        if keys:
            log.info("webhook.requeued", keys=len(keys))
        return len(keys)

    def _webhook_refetch(
        self,
        patient_id: uuid.UUID | None,
        appointment_id: str | None,
        key: str,
        since: datetime | None,
    ) -> None:
        """Re-fetch the one appointment the pending events of `key` name, else the whole
        patient; then mark them processed. Meeting a running sync of the patient, try again
        after it (that sync may have fetched before the change)."""
        gate = self.webhook_gate()
        started = self.app.clock()
        named = gate.pending_appointments(key)
        if not named:
            return  # dealt with by an earlier job of the key
        only = next(iter(named)) if len(named) == 1 else None
        service = self.app.sync_service()
        webhook = Actor("webhook")
        try:
            if only is not None:
                prepared = service.prepare_appointment(only, patient_hint=patient_id, actor=webhook)
            elif patient_id is not None:
                prepared = service.prepare_patient(str(patient_id), actor=webhook)
            else:
                gate.mark_processed(key, started)
                return
        except SyncInProgress:
            log.info("webhook.sync_busy", retry_seconds=BUSY_RETRY_SECONDS)
            self._refetch.schedule(
                args=(patient_id, appointment_id, key, since), delay=BUSY_RETRY_SECONDS
            )
            return
        except SyncInputError as exc:
            log.info("webhook.sync_skipped", reason=type(exc).__name__)
            gate.mark_processed(key, started)
            return
        self.finished(prepared, service.run(prepared))
        gate.mark_processed(key, started)
        if gate.pending_appointments(key):
            # Events that came during the run: their own job may have met it busy.
            self._refetch.schedule(args=(patient_id, None, key, None), delay=BUSY_RETRY_SECONDS)

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
        service = self.app.sync_service()
        try:
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
        if started is not None:
            self.run_later(started[1])
        self.requeue_overdue_webhooks()
        for push_id in self.app.push_service().waiting():
            self.push_later(push_id)  # its job was lost with a process; a claim guards it
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
