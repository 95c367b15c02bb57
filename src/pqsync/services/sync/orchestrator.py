"""Run a sync from start to end: prepare the run, pick its plan (a strategy of
`strategies`), let it run, record the outcome.

The parts live beside it in this package (see its __init__). Every run holds its scope's
lease, writes a sync_logs row (failed runs too) and commits page by page, so a failure keeps
what was already fetched. Every date sent to IntakeQ and every window judgement uses the
practice's zone; an organisation's zone is for display only.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from pqsync.db.engine import begin_write
from pqsync.db.lookup import organization_by_ref, patient_by_ref
from pqsync.db.tables import Affiliation, Organization, Patient, SyncLog
from pqsync.db.tables import Appointment as AppointmentRow
from pqsync.domain.run_types import run_type
from pqsync.domain.windows import Window, default_window
from pqsync.intakeq import waits
from pqsync.intakeq.client import RequestTally
from pqsync.intakeq.errors import IntakeQError
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
from pqsync.services.sync.plan import PRACTICE_DENSITY, Planner
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
from pqsync.services.sync.strategies import (
    AppointmentSource,
    Incremental,
    NightlyState,
    Parts,
    PerPatient,
    ProbedWindow,
    ProgressCallback,
    Record,
    Refetch,
    Step,
    Strategy,
    WindowFetch,
    remember_night,
)
from pqsync.services.sync.strategies import no_progress as _no_progress
from pqsync.services.sync.writer import AppointmentWriter

__all__ = [
    "PRACTICE_DENSITY",
    "Actor",
    "AppointmentSource",
    "PatientResult",
    "PreparedRun",
    "Record",
    "Summary",
    "SyncInProgress",
    "SyncInputError",
    "SyncResult",
    "SyncService",
    "SyncedAppointment",
]

Clock = Callable[[], datetime]

CLI_ACTOR = Actor(kind="cli")
SCHEDULE_ACTOR = Actor(kind="schedule")

log = get_logger("pqsync.sync")


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
        self.parts = Parts(source, self.writer, self.planner, self.deletions, self.practice_zone)

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

    def _choose(self, session: Session, prepared: PreparedRun, ctx: RunContext) -> Strategy | None:
        """The run's plan: a webhook's one appointment; a patient's own query; for an
        organisation the cheaper of its whole window and one query per patient (the window's
        first page decides when the practice's size is not known); for the nightly a
        reconcile of the whole window when one is due, else what changed. None: nothing to
        fetch (an organisation without patients)."""
        parts = self.parts
        if prepared.appointment_id is not None:
            return Refetch(parts, prepared.appointment_id)
        if prepared.scope == "patient":
            return PerPatient(parts)
        if prepared.scope == "organization":
            ctx.result.plan = WindowFetch.plan
            if not ctx.results:
                return None
            per_patient_cost = self.planner.per_patient_cost(
                session, list(ctx.results), prepared.window
            )
            density = self.planner.known_density(session)
            session.commit()
            if density is None:
                return ProbedWindow(parts, per_patient_cost)
            if self.planner.window_cost(density, prepared.window) > per_patient_cost:
                return PerPatient(parts)
            return WindowFetch(parts)
        since = NightlyState.load(session).incremental_since(prepared.started_at)
        session.commit()
        if since is None:
            return WindowFetch(parts)
        return Incremental(parts, *since)

    def _execute(
        self,
        session: Session,
        prepared: PreparedRun,
        ctx: RunContext,
        progress: ProgressCallback,
    ) -> None:
        strategy = self._choose(session, prepared, ctx)
        if strategy is None:
            return
        ctx.result.plan = strategy.plan
        strategy.execute(Step(session, prepared, ctx, list(ctx.results), progress))
        # IntakeQ changing between the pages read makes the run partial (consistency.py).
        consistency.check_unchanged(self.source, ctx)

    def _finish(
        self, session: Session, prepared: PreparedRun, ctx: RunContext, requests_made: int
    ) -> None:
        result = sync_records.finish(session, prepared, ctx, requests_made, self.clock())
        if prepared.scope == "nightly" and result.status != "failed":
            remember_night(self.planner, session, prepared, ctx)
