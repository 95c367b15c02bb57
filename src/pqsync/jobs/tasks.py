"""The queue's tasks, bound to one composition root: run a prepared sync, start a sync
later (budget paused it), re-fetch for a webhook, and the minute tick of the schedule."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from huey import Huey, crontab
from sqlalchemy import Engine
from sqlalchemy.dialects import postgresql, sqlite

from pqsync.db.tables import WorkerHeartbeat
from pqsync.domain.windows import Window
from pqsync.logging import get_logger
from pqsync.services.alerts import Alerts
from pqsync.services.digest import send_digests
from pqsync.services.housekeeping import prune
from pqsync.services.schedule import NightlySchedule
from pqsync.services.sync import SCHEDULE_ACTOR, Actor, PreparedRun, SyncResult, SyncService
from pqsync.services.sync.locks import SyncInProgress, SyncLocks, default_holder
from pqsync.services.sync.results import HandedBack, SyncInputError
from pqsync.services.verify import SlotTaken
from pqsync.services.webhooks import Admission, WebhookGate, patient_of_key
from pqsync.settings import SettingsError

if TYPE_CHECKING:
    from pqsync.bootstrap import App

log = get_logger("pqsync.jobs")

# A webhook's re-fetch that meets a running sync of its patient tries again this much later,
# so that it runs after that sync (which may have fetched before the change).
BUSY_RETRY_SECONDS = 2.0
# How long past its due moment a pending webhook event waits before a worker's tick queues
# its re-fetch again (its job was lost with a process, or is stuck).
OVERDUE_GRACE = timedelta(seconds=30)


# A night's runs at most: the first and two more after failures.
NIGHTLY_TRIES = 3


def is_paused(result: SyncResult) -> bool:
    """A run that stopped at the day's request limit: paused, not failed."""
    return result.status == "paused"


class Jobs:
    """Tasks on `huey`; the web process enqueues, `pqsync worker` runs them."""

    def __init__(self, app: App, huey: Huey, *, worker: str | None = None) -> None:
        self.app = app
        self.huey = huey
        self.worker = worker or default_holder()
        # Set when the worker is stopping (SIGTERM): running syncs hand back at a page's end.
        self.stopping = threading.Event()
        self._run = huey.task(name="run_sync")(self._run_prepared)
        # Kept for tasks an earlier version queued (a paused run now resumes as itself).
        self._start = huey.task(name="start_sync")(self._start_scope)
        self._refetch = huey.task(name="webhook_refetch")(self._webhook_refetch)
        self._verify = huey.task(name="verify")(self._weekly_verification)
        self._push = huey.task(name="push")(self._send_push)
        huey.periodic_task(crontab(), name="tick")(self.tick)

    @property
    def engine(self) -> Engine:
        return self.app.engine

    def alerts(self) -> Alerts:
        return self.app.alerts()

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
        self.carry_out(self.app.sync_service(), prepared)

    def _check_stopping(self, _label: str, _done: int, _total: int | None) -> None:
        if self.stopping.is_set():
            raise HandedBack()

    def carry_out(self, service: SyncService, prepared: PreparedRun) -> SyncResult:
        """Run it to the end, then alerts; a run that raised (a database error, a bug) is
        recorded as failed by the run itself and alerts too before the error goes on. A
        stopping worker (SIGTERM) hands the run back at a page's end."""
        try:
            result = service.run(prepared, progress=self._check_stopping)
        except Exception:
            try:
                self.alerts().run_finished(prepared.run_id)
            except Exception as exc:  # the database itself is down: the lease reaper alerts
                log.error("alert.not_raised", run_id=str(prepared.run_id), error=type(exc).__name__)
            raise
        self.finished(prepared, result)
        return result

    def finished(self, prepared: PreparedRun, result: SyncResult) -> None:
        """After a run: alerts. A paused run (out of the day's requests, or handed back by a
        stopping worker) is taken up again as itself by a tick once it is due (see
        `resume_paused`): the next worker carries a handed-back run out."""
        if result.error_kind == "handed_back":
            log.info("job.handed_back", run_id=str(prepared.run_id), scope=prepared.scope)
        elif is_paused(result):
            log.info("job.paused", run_id=str(prepared.run_id), resumes_at=result.budget_frees_at)
        self.alerts().run_finished(result.run_id)

    def resume_paused(self) -> list[uuid.UUID]:
        """Queue the paused runs whose requests have freed up, each as the same run."""
        service = self.app.sync_service()
        resumed = []
        for run_id in service.paused_runs_due():
            try:
                prepared = service.prepare_resume(run_id)
            except (SyncInProgress, SyncInputError) as exc:
                log.info("job.resume_skipped", run_id=str(run_id), reason=type(exc).__name__)
                continue
            self.run_later(prepared)
            resumed.append(run_id)
        return resumed

    def _start_scope(self, scope: str, ref: str | None, window: Window, actor: Actor) -> None:
        service = self.app.sync_service()
        try:
            prepared = _prepare(service, scope, ref, window, actor)
        except (SyncInProgress, SyncInputError) as exc:
            log.info("job.start_skipped", scope=scope, reason=type(exc).__name__)
            return
        self.carry_out(service, prepared)

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
        result = self.carry_out(service, prepared)
        if result.status == "failed":
            # IntakeQ failed the re-fetch: the events stay pending and the tick tries again
            # (see WebhookGate.record_failure); the change is not lost until the nightly.
            reason = result.error_kind or "failed"
            given_up = gate.record_failure(key, started, f"{reason}: {result.error or ''}")
            log.warning("webhook.refetch_failed", reason=reason, given_up=given_up)
            return
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
        try:
            service = self.app.sync_service()
            prepared = service.prepare_nightly(actor=actor)
        except BaseException:
            schedule.release(claims)
            raise
        schedule.attach(claims, prepared.run_id)
        log.info("schedule.nightly_started", run_id=str(prepared.run_id), organizations=len(claims))
        return service, prepared

    def retry_failed_nights(self) -> None:
        """A nightly run that failed (its worker killed, IntakeQ down) runs again the same
        day, up to NIGHTLY_TRIES runs, while the day's requests last (a run the budget stops
        is paused, not failed, and resumes by itself)."""
        try:
            usage = self.app.budget_usage()
        except SettingsError:  # no IntakeQ key: the retried run fails and says why
            usage = None
        if usage is not None and usage.day_used >= usage.daily_limit:
            return
        for claim in self.schedule().retry_failed(NIGHTLY_TRIES):
            log.info("schedule.nightly_retry", day=claim.local_day.isoformat())

    def tick(self) -> None:
        """Every minute on every worker: close stale runs, resume paused ones, report missed
        nights, start due nightly runs, prune; then the heartbeat (a tick that fails has none)."""
        now = self.app.clock()
        alerts = self.alerts()
        alerts.retry_mail()
        for run_id in self.locks().reap_expired():
            alerts.run_finished(run_id)
        schedule = self.schedule()
        for missed in schedule.missed():
            alerts.nightly_missed(
                missed.organization_id, missed.organization_name, missed.local_day
            )
        self._unless_misconfigured(self.resume_paused)
        self._unless_misconfigured(self.retry_failed_nights)
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
        settings = self.app.settings
        send_digests(self.engine, self.app.clock, alerts.mailer, settings.base_url)
        self.requeue_overdue_webhooks()
        self._unless_misconfigured(self.requeue_waiting_pushes)
        prune(
            self.engine,
            now,
            log_retention_days=settings.log_retention_days,
            change_history_retention_days=settings.change_history_retention_days,
        )
        self._unless_misconfigured(self.verify_if_due)
        # Last: a worker whose tick fails (its database, a bug) stops being seen, and
        # /healthz says down within two minutes.
        self.heartbeat(now)

    @staticmethod
    def _unless_misconfigured(step: Callable[[], object]) -> None:
        """A tick's step that needs IntakeQ: with the configuration unusable (no key), it is
        skipped; the nightly start says why in its "cannot start" alert."""
        try:
            step()
        except SettingsError as exc:
            log.error("schedule.step_skipped", step=step.__name__, reason=str(exc))

    def requeue_waiting_pushes(self) -> None:
        for push_id in self.app.push_service().waiting():
            self.push_later(push_id)  # its job was lost with a process; a claim guards it

    def verify_if_due(self) -> None:
        """Queue this week's verification of every organisation once its time has come
        (Sunday 04:00 in the practice's zone); it runs when the day's budget allows."""
        if self.app.verifier().due_slot() is not None:
            self._verify()

    def _weekly_verification(self) -> None:
        verifier = self.app.verifier()
        slot = verifier.due_slot()
        if slot is None:
            return
        try:
            verifier.verify(None, trigger="schedule", slot=slot)
        except SlotTaken:
            log.info("job.verify_skipped", reason="another worker has this week's")

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


def _prepare(
    service: SyncService, scope: str, ref: str | None, window: Window, actor: Actor
) -> PreparedRun:
    if scope == "patient" and ref is not None:
        return service.prepare_patient(ref, window=window, actor=actor)
    if scope == "organization" and ref is not None:
        return service.prepare_organization(ref, window=window, actor=actor)
    return service.prepare_nightly(actor=actor)
