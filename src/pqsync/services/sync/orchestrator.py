"""Run a sync from start to end: prepare the run, carry out its plan, record the outcome.

The parts live beside it in this package (see its __init__). Every run holds its scope's
lease, writes a sync_logs row (failed runs too) and commits page by page, so a failure keeps
what was already fetched. Every date sent to IntakeQ and every window judgement uses the
practice's zone; an organisation's zone is for display only.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Generator, Iterator
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy import Engine, func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from pqsync.db.engine import begin_write
from pqsync.db.lookup import organization_by_ref, patient_by_ref
from pqsync.db.tables import Affiliation, Organization, Patient, SyncLog, SyncState
from pqsync.db.tables import Appointment as AppointmentRow
from pqsync.domain.run_types import run_type
from pqsync.domain.windows import Window, default_window, new_days
from pqsync.intakeq import waits
from pqsync.intakeq.client import IntakeQPagingError, RequestTally
from pqsync.intakeq.errors import (
    BudgetExhausted,
    IntakeQAuthError,
    IntakeQError,
    IntakeQUnreachable,
)
from pqsync.intakeq.models import Appointment, AppointmentQuery, Client, MalformedRecord
from pqsync.logging import get_logger
from pqsync.services.sync import consistency
from pqsync.services.sync import records as sync_records
from pqsync.services.sync.context import Lookups, RunContext
from pqsync.services.sync.deletion import RECHECK_LIMIT, Deletions
from pqsync.services.sync.identity import (
    FOLLOW_LOOKUPS,
    ClientBook,
    Identities,
    PatientIdentity,
    lookup_budget,
)
from pqsync.services.sync.locks import (
    PREPARED_HOLD,
    LeaseKeeper,
    LeaseLost,
    SyncInProgress,
    SyncLocks,
)
from pqsync.services.sync.plan import (
    PAGE_SIZE,
    PRACTICE_DENSITY,
    UNKNOWN_PRACTICE_PAGES,
    Planner,
    bounded,
    page_limit,
)
from pqsync.services.sync.results import (
    HANDED_BACK,
    Actor,
    HandedBack,
    PatientResult,
    PreparedRun,
    Summary,
    SyncedAppointment,
    SyncInputError,
    SyncResult,
)
from pqsync.services.sync.writer import AppointmentWriter

__all__ = [
    "PRACTICE_DENSITY",
    "Actor",
    "PatientResult",
    "PreparedRun",
    "Summary",
    "SyncInProgress",
    "SyncInputError",
    "SyncResult",
    "SyncService",
    "SyncedAppointment",
]

Clock = Callable[[], datetime]
Record = Appointment | MalformedRecord
ProgressCallback = Callable[[str, int, int | None], None]

NIGHTLY_WATERMARK = "nightly_watermark"
NIGHTLY_RECONCILED = "nightly_reconciled"
# The window (start and end dates) the nightly runs last made complete.
NIGHTLY_COVERED = "nightly_covered"
# A full-window reconcile replaces the incremental run when the watermark is this old, and
# in any case once this long after the last one (whatever the watermark says).
RECONCILE_AFTER = timedelta(days=7)
# `updatedSince` is date-only: go back a whole day more so the boundary is never missed.
WATERMARK_OVERLAP = timedelta(days=1)

CLI_ACTOR = Actor(kind="cli")
SCHEDULE_ACTOR = Actor(kind="schedule")

log = get_logger("pqsync.sync")


class AppointmentSource(Protocol):
    """What the sync needs of the IntakeQ client."""

    def counting(self) -> AbstractContextManager[RequestTally]: ...

    def get_appointment(self, appointment_id: str) -> Appointment | None: ...

    def appointment_pages(self, query: AppointmentQuery) -> Generator[list[Record], None, None]: ...

    def clients(self, search: str | None = None) -> Iterator[Client]: ...


def _no_progress(_label: str, _done: int, _total: int | None) -> None:
    return None


# Errors that end the whole run: retrying another patient cannot help.
_RUN_ENDING = (BudgetExhausted, IntakeQAuthError, IntakeQUnreachable, IntakeQPagingError)


class SyncService:
    """Runs patient, organisation and nightly syncs against one IntakeQ source."""

    def __init__(
        self,
        engine: Engine,
        source: AppointmentSource,
        *,
        clock: Clock = lambda: datetime.now(UTC),
        default_timezone: str = "America/Denver",
        practice_timezone: str = "America/Denver",
        locks: SyncLocks | None = None,
        on_runs_closed: Callable[[list[uuid.UUID]], None] | None = None,
    ) -> None:
        self.engine = engine
        # Told of the dead runs that preparing a run closed (so they alert, whoever closed them).
        self.on_runs_closed = on_runs_closed
        self.source = source
        self.clock = clock
        self.default_timezone = default_timezone
        self.practice_zone = ZoneInfo(practice_timezone)
        self.locks = locks or SyncLocks(engine, clock)
        self.writer = AppointmentWriter(clock)
        self.planner = Planner(clock, self.practice_zone)
        self.deletions = Deletions(self.writer, source, clock)

    # -- resolving scopes -------------------------------------------------------------

    def find_patient(self, session: Session, ref: str) -> Patient:
        patient = patient_by_ref(session, ref)
        if patient is None:
            raise SyncInputError("no such patient")
        return patient

    def find_organization(self, session: Session, ref: str) -> Organization:
        org = organization_by_ref(session, ref)
        if org is None:
            raise SyncInputError(f"no such organization: {ref}")
        return org

    def organization_window(self, org: Organization | None) -> Window:
        """Today in the practice's zone, minus/plus the organisation's days (90/90)."""
        back = org.window_days_back if org else None
        ahead = org.window_days_ahead if org else None
        return default_window(self.clock(), self.practice_zone, back, ahead)

    def _patient_organization(
        self, session: Session, patient: Patient, organization_id: uuid.UUID | None
    ) -> Organization | None:
        """The organisation a patient's run is for: the caller's, else the first by slug."""
        statement = (
            select(Organization)
            .join(Affiliation, Affiliation.organization_id == Organization.id)
            .where(Affiliation.patient_id == patient.id)
        )
        if organization_id is not None:
            org = session.scalar(statement.where(Organization.id == organization_id))
            if org is None:
                raise SyncInputError("no such patient")
            return org
        return session.scalar(statement.order_by(Organization.slug).limit(1))

    # -- preparing runs ---------------------------------------------------------------

    def prepare_patient(
        self,
        patient_ref: str,
        *,
        window: Window | None = None,
        actor: Actor = CLI_ACTOR,
        organization_id: uuid.UUID | None = None,
    ) -> PreparedRun:
        """Validate, take the patient's lock and open the run's sync_logs row. The run is
        for `organization_id` when given (the caller's), else the patient's first."""
        with Session(self.engine, expire_on_commit=False) as session:
            patient = self.find_patient(session, patient_ref)
            org = self._patient_organization(session, patient, organization_id)
            return self._open_run(
                session,
                scope="patient",
                scope_key=f"patient:{patient.id}",
                label=f"patient {patient.id}",
                window=window or self.organization_window(org),
                actor=actor,
                timezone=org.timezone if org else self.default_timezone,
                patient_ids=[patient.id],
                organization=org,
            )

    def prepare_appointment(
        self,
        appointment_id: str,
        *,
        patient_hint: uuid.UUID | None = None,
        actor: Actor = CLI_ACTOR,
        organization_id: uuid.UUID | None = None,
    ) -> PreparedRun:
        """A run of one patient's scope that re-fetches one appointment by id (a webhook's
        hint; 404 means deleted). The patient is the one we store it for, else the hint."""
        appointment_id = appointment_id.strip()
        if not appointment_id or len(appointment_id) > 64:
            raise SyncInputError("not an IntakeQ appointment id")
        with Session(self.engine, expire_on_commit=False) as session:
            stored_for = session.scalar(
                select(AppointmentRow.patient_id).where(
                    AppointmentRow.pq_appointment_id == appointment_id
                )
            )
            patient_id = stored_for or patient_hint
            if patient_id is None:
                raise SyncInputError("no such appointment and no patient to look for it")
        prepared = self.prepare_patient(
            str(patient_id), actor=actor, organization_id=organization_id
        )
        return replace(prepared, appointment_id=appointment_id)

    def organization_requests(
        self, session: Session, patient_ids: list[uuid.UUID], window: Window
    ) -> int:
        """At most how many requests an organisation's run spends (what Sync all promises):
        its fetch (the cheaper plan), the questions that confirm ClientIds not known yet,
        and the re-checks by id. The run keeps its re-checks inside this number."""
        if not patient_ids:
            return 0
        unlearned = session.scalar(
            select(func.count())
            .select_from(Patient)
            .where(Patient.id.in_(patient_ids), Patient.intakeq_client_id.is_(None))
        )
        fetch = self.planner.organization_requests(session, patient_ids, window)
        return fetch + lookup_budget(int(unlearned or 0)) + RECHECK_LIMIT

    def prepare_organization(
        self, org_ref: str, *, window: Window | None = None, actor: Actor = CLI_ACTOR
    ) -> PreparedRun:
        with Session(self.engine, expire_on_commit=False) as session:
            org = self.find_organization(session, org_ref)
            patient_ids = list(
                session.scalars(
                    select(Affiliation.patient_id).where(Affiliation.organization_id == org.id)
                )
            )
            window = window or self.organization_window(org)
            promise = self.organization_requests(session, patient_ids, window)
            return self._open_run(
                session,
                scope="organization",
                scope_key=f"organization:{org.id}",
                label=f"organization {org.slug}",
                window=window,
                actor=actor,
                timezone=org.timezone,
                patient_ids=patient_ids,
                organization=org,
                request_promise=promise,
            )

    def prepare_nightly(self, *, actor: Actor = SCHEDULE_ACTOR) -> PreparedRun:
        """The run for every organisation at once; its window is the union of theirs."""
        with Session(self.engine, expire_on_commit=False) as session:
            orgs = list(session.scalars(select(Organization)))
            windows = [self.organization_window(org) for org in orgs] or [
                self.organization_window(None)
            ]
            window = Window(min(w.start for w in windows), max(w.end for w in windows))
            patient_ids = list(session.scalars(select(Affiliation.patient_id).distinct()))
            return self._open_run(
                session,
                scope="nightly",
                scope_key="nightly",
                label="all organizations (nightly)",
                window=window,
                actor=actor,
                timezone=self.default_timezone,
                patient_ids=patient_ids,
                organization=None,
            )

    def _open_run(
        self,
        session: Session,
        *,
        scope: str,
        scope_key: str,
        label: str,
        window: Window,
        actor: Actor,
        timezone: str,
        patient_ids: list[uuid.UUID],
        organization: Organization | None,
        request_promise: int | None = None,
    ) -> PreparedRun:
        run_id = uuid.uuid4()
        organization_id = organization.id if organization else None
        organization_name = organization.name if organization else None
        session.commit()  # end the read transaction before other connections write
        closed = self.locks.reap_expired()  # runs whose worker died are closed, scopes freed
        if closed and self.on_runs_closed is not None:
            self.on_runs_closed(closed)
        self.locks.acquire(scope_key, run_id, label, hold=PREPARED_HOLD)
        now = self.clock()
        prepared = PreparedRun(
            run_id=run_id,
            scope=scope,
            scope_key=scope_key,
            window=window,
            actor=actor,
            started_at=now,
            timezone=timezone,
            patient_ids=patient_ids,
            organization_id=organization_id,
            organization_name=organization_name,
            request_promise=request_promise,
        )
        try:
            begin_write(session)
            session.add(
                SyncLog(
                    id=run_id,
                    sync_type=scope,
                    patient_id=patient_ids[0] if scope == "patient" else None,
                    organization_id=prepared.organization_id,
                    triggered_by=actor.kind,
                    run_type=run_type(scope, actor.kind),
                    triggered_by_user_id=actor.user_id,
                    status="running",
                    date_range_start=window.start,
                    date_range_end=window.end,
                    started_at=now,
                    details={
                        "patients_total": len(patient_ids),
                        "patients_done": 0,
                        "triggered_by_name": actor.name,
                        # Every patient's line from the first second: queued.
                        "patients": {str(p): {"state": "pending"} for p in patient_ids},
                        "requests_promised": request_promise,
                    },
                )
            )
            session.commit()
        except BaseException:
            self.locks.release(scope_key, run_id)
            raise
        return prepared

    def paused_runs_due(self) -> list[uuid.UUID]:
        """Paused runs whose requests have freed up, oldest first."""
        now = self.clock()
        with Session(self.engine) as session:
            rows = session.execute(
                select(SyncLog.id, SyncLog.details)
                .where(SyncLog.status == "paused")
                .order_by(SyncLog.started_at)
            ).all()
        due = []
        for run_id, details in rows:
            try:
                resumes_at = datetime.fromisoformat(str((details or {}).get("resumes_at")))
            except ValueError:
                resumes_at = now
            if resumes_at <= now:
                due.append(run_id)
        return due

    def prepare_resume(self, run_id: uuid.UUID) -> PreparedRun:
        """Take a paused run up again, as the same run: its scope, window and starter, its
        finished patients kept. Raises SyncInProgress when another run holds the scope,
        SyncInputError when the run is not paused (any more)."""
        with Session(self.engine, expire_on_commit=False) as session:
            row = session.get(SyncLog, run_id)
            if row is None or row.status != "paused":
                raise SyncInputError("no such paused run")
            org = session.get(Organization, row.organization_id) if row.organization_id else None
            if row.sync_type == "patient" and row.patient_id is not None:
                patient_ids = [row.patient_id]
                scope_key = f"patient:{row.patient_id}"
            elif row.sync_type == "organization" and org is not None:
                patient_ids = list(
                    session.scalars(
                        select(Affiliation.patient_id).where(Affiliation.organization_id == org.id)
                    )
                )
                scope_key = f"organization:{org.id}"
            elif row.sync_type == "nightly":
                patient_ids = list(session.scalars(select(Affiliation.patient_id).distinct()))
                scope_key = "nightly"
            else:
                raise SyncInputError("the paused run's patient or organisation is gone")
            details = dict(row.details or {})
            prepared = PreparedRun(
                run_id=run_id,
                scope=row.sync_type,
                scope_key=scope_key,
                window=Window(row.date_range_start, row.date_range_end)
                if row.date_range_start is not None and row.date_range_end is not None
                else self.organization_window(org),
                actor=Actor(
                    kind=row.triggered_by,
                    user_id=row.triggered_by_user_id,
                    name=details.get("triggered_by_name"),
                ),
                started_at=row.started_at,
                timezone=org.timezone if org is not None else self.default_timezone,
                patient_ids=patient_ids,
                organization_id=org.id if org is not None else None,
                organization_name=org.name if org is not None else None,
                resumed=True,
            )
            session.commit()
            self.locks.resume(scope_key, run_id)
            begin_write(session)
            reopened = session.connection().execute(
                update(SyncLog)
                .where(SyncLog.id == run_id, SyncLog.status == "paused")
                .values(status="running", finished_at=None, error_message=None)
            )
            session.commit()
        if reopened.rowcount != 1:  # resumed by another worker meanwhile
            self.locks.release(scope_key, run_id)
            raise SyncInputError("no such paused run")
        log.info("sync.resumed", run_id=str(run_id), scope=prepared.scope)
        return prepared

    # -- convenience: prepare + run -----------------------------------------------------

    def sync_patient(
        self,
        patient_ref: str,
        *,
        window: Window | None = None,
        actor: Actor = CLI_ACTOR,
        organization_id: uuid.UUID | None = None,
        progress: ProgressCallback = _no_progress,
    ) -> SyncResult:
        """Sync one patient: one `client` query (all pages), filtered exactly."""
        prepared = self.prepare_patient(
            patient_ref, window=window, actor=actor, organization_id=organization_id
        )
        return self.run(prepared, progress=progress)

    def sync_organization(
        self,
        org_ref: str,
        *,
        window: Window | None = None,
        actor: Actor = CLI_ACTOR,
        progress: ProgressCallback = _no_progress,
    ) -> SyncResult:
        """Sync every patient of an organisation with the cheaper plan."""
        return self.run(
            self.prepare_organization(org_ref, window=window, actor=actor), progress=progress
        )

    def sync_nightly(
        self, *, actor: Actor = SCHEDULE_ACTOR, progress: ProgressCallback = _no_progress
    ) -> SyncResult:
        """What the schedule runs: the practice fetched once for every organisation."""
        return self.run(self.prepare_nightly(actor=actor), progress=progress)

    # -- running ------------------------------------------------------------------------

    def run(
        self, prepared: PreparedRun, *, progress: ProgressCallback = _no_progress
    ) -> SyncResult:
        """Execute a prepared run. IntakeQ failures and a lost lease give a failed result,
        never an exception. Every log line of the run (each IntakeQ request) names it."""
        with structlog.contextvars.bound_contextvars(run_id=str(prepared.run_id)):
            return self._run(prepared, progress)

    def _run(self, prepared: PreparedRun, progress: ProgressCallback) -> SyncResult:
        keep_scope = False
        try:
            with (
                self.locks.keep(prepared.scope_key, prepared.run_id) as lease,
                self.source.counting() as tally,
                Session(self.engine, expire_on_commit=False) as session,
            ):
                ctx = self._context(session, prepared, lease, tally)

                def note_wait(seconds: float, why: str) -> None:
                    sync_records.note_wait(self.engine, prepared, ctx, seconds, why)

                try:
                    with waits.listening(note_wait):
                        self._execute(session, prepared, ctx, progress)
                except (IntakeQError, LeaseLost) as exc:
                    session.rollback()
                    sync_records.record_failure(ctx.result, exc)
                except HandedBack:
                    session.rollback()
                    ctx.result.status = "paused"
                    ctx.result.error = HANDED_BACK
                    ctx.result.error_kind = "handed_back"
                except Exception as exc:
                    session.rollback()
                    ctx.result.status = "failed"
                    database = isinstance(exc, SQLAlchemyError)
                    ctx.result.error = (
                        f"database error ({type(exc).__name__})"
                        if database
                        else f"internal error ({type(exc).__name__})"
                    )
                    ctx.result.error_kind = "database" if database else "internal"
                    self._finish(session, prepared, ctx, tally.sent)
                    raise
                self._finish(session, prepared, ctx, tally.sent)
                if ctx.result.status == "paused" and ctx.result.budget_frees_at is not None:
                    # The scope stays the paused run's until it resumes (and a while after,
                    # for the worker to take it up); a new run of it would only pause too.
                    until = ctx.result.budget_frees_at + PREPARED_HOLD
                    self.locks.hold_until(prepared.scope_key, prepared.run_id, until)
                    keep_scope = True
                return ctx.result
        finally:
            if not keep_scope:
                self.locks.release(prepared.scope_key, prepared.run_id)

    def _context(
        self, session: Session, prepared: PreparedRun, lease: LeaseKeeper, tally: RequestTally
    ) -> RunContext:
        patients = self._load_patients(session, prepared.patient_ids)
        results = {p.id: PatientResult(patient_id=p.id, patient_name=p.full_name) for p in patients}
        everyone = session.execute(select(Patient.id, Patient.email, Patient.intakeq_client_id))
        unlearned = sum(1 for p in patients if p.intakeq_client_id is None)
        ctx = RunContext(
            run_id=prepared.run_id,
            actor=prepared.actor,
            started_at=prepared.started_at,
            practice_zone=self.practice_zone,
            display_zone=ZoneInfo(prepared.timezone),
            lookups=Lookups.load(session),
            identity=Identities(
                [PatientIdentity(*row) for row in everyone],
                scope=set(results),
                lookup=ClientBook(self._clients, list_pages=unlearned),
                lookups_left=unlearned,
                follow_lookups_left=FOLLOW_LOOKUPS,
            ),
            results=results,
            result=SyncResult(
                run_id=prepared.run_id,
                scope=prepared.scope,
                status="running",
                window=prepared.window,
                started_at=prepared.started_at,
                finished_at=prepared.started_at,
                summary=Summary(),
                patients=list(results.values()),
                organization_id=prepared.organization_id,
                organization_name=prepared.organization_name,
            ),
            lease=lease,
            keep_appointments=prepared.scope == "patient",
            rechecks_left=RECHECK_LIMIT,
            request_promise=prepared.request_promise,
            requests_spent=lambda: tally.sent,
        )
        if prepared.resumed:
            # A paused run resumes where it stopped: its finished patients stay finished.
            row = session.get(SyncLog, prepared.run_id)
            saved = (row.details if row is not None else {}).get("patients") or {}
            for patient_id, result in results.items():
                before = saved.get(str(patient_id)) or {}
                if before.get("state") == "done":
                    result.state = "done"
                    result.summary = Summary.from_mapping(before.get("summary"))
        session.commit()
        return ctx

    def _clients(self, search: str | None) -> Iterator[tuple[int, str | None]]:
        """IntakeQ's clients (matching `search`, a partial match), as (ClientId, email)."""
        return ((c.client_id, c.email) for c in self.source.clients(search))

    def _load_patients(self, session: Session, ids: list[uuid.UUID]) -> list[Patient]:
        if not ids:
            return []
        return list(
            session.scalars(
                select(Patient)
                .where(Patient.id.in_(ids))
                .order_by(Patient.last_name, Patient.first_name, Patient.id)
            )
        )

    def _execute(
        self,
        session: Session,
        prepared: PreparedRun,
        ctx: RunContext,
        progress: ProgressCallback,
    ) -> None:
        patient_ids = list(ctx.results)
        if prepared.appointment_id is not None:
            ctx.result.plan = "refetch"
            self._all_states(ctx, "running")
            self.deletions.recheck(session, ctx, [prepared.appointment_id], "404 on re-fetch")
            self._all_states(ctx, "done")
        elif prepared.scope == "patient":
            ctx.result.plan = "per_patient"
            self._per_patient(session, prepared, ctx, patient_ids, progress)
        elif prepared.scope == "organization":
            self._organization(session, prepared, ctx, patient_ids, progress)
        else:
            self._nightly(session, prepared, ctx, patient_ids, progress)
        # IntakeQ changing between the pages read makes the run partial (consistency.py).
        consistency.check_unchanged(self.source, ctx)

    @staticmethod
    def _recount(ctx: RunContext) -> None:
        """A fetch of the whole window counts every patient afresh (a resumed run's too)."""
        for result in ctx.results.values():
            result.summary = Summary()

    @staticmethod
    def _all_states(ctx: RunContext, state: str) -> None:
        for result in ctx.results.values():
            result.state = state

    # -- plans --------------------------------------------------------------------------

    def _organization(
        self,
        session: Session,
        prepared: PreparedRun,
        ctx: RunContext,
        patient_ids: list[uuid.UUID],
        progress: ProgressCallback,
    ) -> None:
        ctx.result.plan = "window"
        if not patient_ids:
            return
        window = prepared.window
        per_patient_cost = self.planner.per_patient_cost(session, patient_ids, window)
        density = self.planner.known_density(session)
        session.commit()
        if density is not None and self.planner.window_cost(density, window) > per_patient_cost:
            ctx.result.plan = "per_patient"
            self._per_patient(session, prepared, ctx, patient_ids, progress)
            return

        def worth_continuing(first_page: list[Record]) -> bool:
            if density is not None:
                return True
            estimate = self.planner.estimate_window_cost(first_page, window)
            if estimate <= per_patient_cost + 1:
                return True
            # Remember the estimate so later runs choose without spending a probe.
            self.planner.remember_density(session, estimate * PAGE_SIZE, window)
            return False

        if not self._window_fetch(session, prepared, ctx, patient_ids, progress, worth_continuing):
            ctx.result.plan = "per_patient"
            self._per_patient(session, prepared, ctx, patient_ids, progress)

    def _window_fetch(
        self,
        session: Session,
        prepared: PreparedRun,
        ctx: RunContext,
        patient_ids: list[uuid.UUID],
        progress: ProgressCallback,
        keep_going: Callable[[list[Record]], bool] | None = None,
    ) -> bool:
        """Fetch the practice's whole window; False when `keep_going` chose to stop after
        page 1. A complete fetch names deletion candidates, which are then proved."""
        window = prepared.window
        self._all_states(ctx, "running")
        self._recount(ctx)
        density = self.planner.known_density(session)
        session.commit()
        pages = self.source.appointment_pages(
            AppointmentQuery(start_date=window.start, end_date=window.end)
        )
        try:
            first = next(pages, [])
            self.writer.write_page(session, ctx, first)
            records = len(first)
            progress("pages", 1, None)
            if len(first) == PAGE_SIZE:
                if keep_going is not None and not keep_going(first):
                    return False
                estimate = self.planner.estimate_window_cost(first, window)
                if density is not None:
                    # Never below what the first page implies: a remembered size may be
                    # stale, and a short bound fails a run that was going well.
                    about = max(self.planner.window_cost(density, window), estimate)
                    limit = page_limit(about)
                else:
                    about = estimate
                    limit = page_limit(estimate, measured=False)
                self._page_progress(session, prepared, ctx, 1, max(about, 2))
                rest = bounded(pages, limit - 1)
                for number, page in enumerate(rest, start=2):
                    self.writer.write_page(session, ctx, page)
                    records += len(page)
                    progress("pages", number, None)
                    self._page_progress(session, prepared, ctx, number, max(about, number + 1))
            else:
                self._page_progress(session, prepared, ctx, 1, 1)
        finally:
            pages.close()
        self.planner.remember_density(session, records, window)
        ctx.window_fetched = True
        if ctx.unidentified_malformed:
            ctx.warn("a record without an Id was skipped: deletions were not inferred this run")
        else:
            self.deletions.absent_from_complete_fetch(session, ctx, patient_ids, window)
        self._all_states(ctx, "done")
        progress("patients", len(patient_ids), len(patient_ids))
        return True

    @staticmethod
    def _page_progress(
        session: Session, prepared: PreparedRun, ctx: RunContext, done: int, about: int
    ) -> None:
        """The window plan's pages so far in the run's record ("page 2 of about 5")."""
        ctx.pages_done, ctx.pages_about = done, about
        sync_records.save_progress(session, prepared, ctx)

    def _per_patient(
        self,
        session: Session,
        prepared: PreparedRun,
        ctx: RunContext,
        patient_ids: list[uuid.UUID],
        progress: ProgressCallback,
    ) -> None:
        """One exact-filtered `client` query per patient; one failing patient fails alone."""
        window = prepared.window
        ctx.pages_done, ctx.pages_about = 0, None  # a window probe's page is not progress
        for result in ctx.results.values():
            if result.state == "running":  # left so by a window probe: queued again
                result.state = "pending"
        stored = self.planner.stored_counts(session, patient_ids, window)
        session.commit()
        for done, patient_id in enumerate(patient_ids):
            result = ctx.results[patient_id]
            if result.state == "done":
                continue
            result.state = "running"
            sync_records.save_progress(session, prepared, ctx)
            held = stored.get(patient_id, 0)
            try:
                email = ctx.identity.email_of(patient_id)
                own = self._fetch_patient(session, ctx, patient_id, email, window, held)
                if own == 0 and held > 0:
                    # None of the patient's own came back (their email may have changed in
                    # IntakeQ, and `client=` matched others): absence proves nothing.
                    ctx.warn(
                        f"patient {patient_id}: the fetch is incomplete: IntakeQ returned none "
                        "of the patient's appointments for their email (has it changed in "
                        "IntakeQ?); nothing was deleted"
                    )
                    ctx.incomplete(
                        patient_id,
                        "IntakeQ returned none of this patient's appointments for their "
                        "email; they may be out of date (check the email in IntakeQ and in "
                        "the directory)",
                    )
                elif ctx.unidentified_malformed:
                    ctx.warn(f"patient {patient_id}: a record without an Id: nothing deleted")
                else:
                    self.deletions.absent_from_complete_fetch(session, ctx, [patient_id], window)
            except _RUN_ENDING as exc:
                result.state = "failed"
                result.error_kind = sync_records.error_kind(exc)
                raise
            except IntakeQError as exc:
                session.rollback()
                result.state = "failed"
                result.error = str(exc)
                result.error_kind = sync_records.error_kind(exc)
                result.summary.errors += 1
                ctx.warn(f"patient {patient_id}: {exc}")
                progress("patients", done + 1, len(patient_ids))
                continue
            result.state = "done"
            progress("patients", done + 1, len(patient_ids))

    def _fetch_patient(
        self,
        session: Session,
        ctx: RunContext,
        patient_id: uuid.UUID,
        email: str,
        window: Window,
        held: int,
    ) -> int:
        """Write the patient's `client` query; how many of the records were the patient's."""
        summary = ctx.results[patient_id].summary
        before = summary.new + summary.updated + summary.unchanged
        query = AppointmentQuery(client=email, start_date=window.start, end_date=window.end)
        limit = page_limit(held // PAGE_SIZE + 1)
        for page in bounded(self.source.appointment_pages(query), limit):
            self.writer.write_page(session, ctx, page, only_patient=patient_id)
        return summary.new + summary.updated + summary.unchanged - before

    def _nightly(
        self,
        session: Session,
        prepared: PreparedRun,
        ctx: RunContext,
        patient_ids: list[uuid.UUID],
        progress: ProgressCallback,
    ) -> None:
        """A whole-window fetch on the first night, when the watermark is a week old, when
        the window last covered is not known, and once every RECONCILE_AFTER whatever the
        watermark says; otherwise what changed since the last run, the days new to the
        window since it was last covered (date-only, every patient: bookings there that
        nobody edited since never come back as changed), then a full fetch (backfill) of
        every patient the last run did not make complete: newly affiliated, email or
        ClientId changed, or incomplete last night."""
        watermark = self._watermark(session.get(SyncState, NIGHTLY_WATERMARK))
        reconciled = self._watermark(session.get(SyncState, NIGHTLY_RECONCILED))
        covered = self._covered(session.get(SyncState, NIGHTLY_COVERED))
        density = self.planner.known_density(session)
        session.commit()
        started = prepared.started_at
        if (
            watermark is None
            or started - watermark > RECONCILE_AFTER
            or reconciled is None
            or started - reconciled >= RECONCILE_AFTER
            or covered is None
        ):
            ctx.result.plan = "window"
            self._window_fetch(session, prepared, ctx, patient_ids, progress)
            return
        ctx.result.plan = "incremental"
        self._all_states(ctx, "running")
        self._recount(ctx)
        limit = (
            page_limit(self.planner.window_cost(density, prepared.window))
            if density is not None
            else UNKNOWN_PRACTICE_PAGES
        )
        deleted_ids: list[str] = []
        for page in bounded(
            self.source.appointment_pages(AppointmentQuery(deleted_only=True)), limit
        ):
            deleted_ids.extend(r.id for r in page if isinstance(r, Appointment))
            ctx.result.malformed += sum(1 for r in page if isinstance(r, MalformedRecord))
        self.deletions.soft_delete(session, ctx, deleted_ids, "listed as deleted by IntakeQ")
        since = (watermark - WATERMARK_OVERLAP).astimezone(self.practice_zone).date()
        changed = self.source.appointment_pages(AppointmentQuery(updated_since=since))
        for number, page in enumerate(bounded(changed, limit), start=1):
            self.writer.write_page(session, ctx, page)
            progress("pages", number, None)
        self._all_states(ctx, "done")
        behind = self._not_synced_since(session, patient_ids, watermark)
        session.commit()  # end the read before the next pages' writes
        if behind:
            per_patient = self.planner.per_patient_cost(session, behind, prepared.window)
            session.commit()
            window_cost = (
                self.planner.window_cost(density, prepared.window) if density is not None else None
            )
            if window_cost is not None and window_cost < per_patient:
                ctx.result.plan = "window"
                self._window_fetch(session, prepared, ctx, patient_ids, progress)
                return
        self._fetch_new_days(session, ctx, new_days(covered, prepared.window), density)
        if not behind:
            return
        ctx.result.plan = "incremental+backfill"
        for patient_id in behind:
            ctx.results[patient_id].state = "pending"
        self._per_patient(session, prepared, ctx, behind, progress)

    def _fetch_new_days(
        self,
        session: Session,
        ctx: RunContext,
        ranges: list[Window],
        density: float | None,
    ) -> None:
        """Fetch every appointment (every patient, all pages) on the days new to the window.
        Absence proves nothing here (IntakeQ's deleted list and the reconcile judge it). An
        incomplete fetch makes the run partial; the next night asks for those days again."""
        try:
            for days in ranges:
                limit = (
                    page_limit(self.planner.window_cost(density, days))
                    if density is not None
                    else UNKNOWN_PRACTICE_PAGES
                )
                query = AppointmentQuery(start_date=days.start, end_date=days.end)
                for page in bounded(self.source.appointment_pages(query), limit):
                    self.writer.write_page(session, ctx, page)
        except (BudgetExhausted, IntakeQAuthError, IntakeQUnreachable):
            raise
        except IntakeQError as exc:
            session.rollback()
            first, last = min(r.start for r in ranges), max(r.end for r in ranges)
            ctx.warn(f"the days new to the window ({first} to {last}): {exc}")
            ctx.incomplete(
                None,
                f"IntakeQ's appointments on the days new to the sync window ({first} to "
                f"{last}) could not all be fetched; bookings on those days may be missing "
                "until the next nightly run",
            )
            return
        ctx.new_days_fetched = True

    @staticmethod
    def _not_synced_since(
        session: Session, patient_ids: list[uuid.UUID], watermark: datetime
    ) -> list[uuid.UUID]:
        """The patients with an affiliation never stamped, or not stamped by the last
        nightly run (whose start is the watermark): their data needs a full fetch."""
        behind = set(
            session.scalars(
                select(Affiliation.patient_id).where(
                    or_(
                        Affiliation.last_practiceq_sync_at.is_(None),
                        Affiliation.last_practiceq_sync_at < watermark,
                    )
                )
            )
        )
        return [p for p in patient_ids if p in behind]

    @staticmethod
    def _covered(state: SyncState | None) -> Window | None:
        """The window the nightly runs last made complete (the reconcile's, moved on by each
        incremental run that fetched its new days)."""
        if state is None:
            return None
        try:
            return Window(
                date.fromisoformat(str(state.value["start"])),
                date.fromisoformat(str(state.value["end"])),
            )
        except (KeyError, ValueError):
            return None

    @staticmethod
    def _watermark(state: SyncState | None) -> datetime | None:
        if state is None:
            return None
        value = state.value.get("at")
        if not isinstance(value, str):
            return None
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
        return moment if moment.tzinfo else None

    def _finish(
        self, session: Session, prepared: PreparedRun, ctx: RunContext, requests_made: int
    ) -> None:
        result = sync_records.finish(session, prepared, ctx, requests_made, self.clock())
        if prepared.scope != "nightly" or result.status == "failed":
            return
        # A partial run moves the watermark too: the patients it left incomplete are not
        # stamped, and the next night's backfill fetches them whole.
        at = {"at": prepared.started_at.isoformat()}
        self.planner.put_state(session, NIGHTLY_WATERMARK, at)
        if ctx.window_fetched:
            self.planner.put_state(session, NIGHTLY_RECONCILED, at)
        if ctx.window_fetched or ctx.new_days_fetched:
            window = prepared.window
            covered = {"start": window.start.isoformat(), "end": window.end.isoformat()}
            self.planner.put_state(session, NIGHTLY_COVERED, covered)
