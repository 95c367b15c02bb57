"""Pull IntakeQ appointments into our database: one patient, one organisation, or nightly.

- An organisation picks the cheaper plan: the practice's whole window fetched once and
  matched locally (about ceil(A/100) requests), or one exactly-filtered `client` query per
  patient (about P requests), from what it knows of the practice's size.
- The nightly run fetches the practice once: `updatedSince` (watermark minus an overlap) and
  `deletedOnly`, or a full-window reconcile when the watermark is missing or a week old.
- Deletions are inferred only from `deletedOnly` or from absence in a complete fetch.
- Every run holds its scope's lease, writes a sync_logs row (failed runs too) and commits
  page by page, so a failure keeps what was already fetched.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Generator
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from pqsync.db.engine import begin_write
from pqsync.db.lookup import organization_by_ref, patient_by_ref
from pqsync.db.tables import Affiliation, Organization, Patient, SyncLog, SyncState
from pqsync.db.tables import Appointment as AppointmentRow
from pqsync.domain.run_types import run_type
from pqsync.domain.windows import Window, default_window
from pqsync.intakeq.errors import (
    BudgetExhausted,
    IntakeQAuthError,
    IntakeQError,
    IntakeQUnreachable,
)
from pqsync.intakeq.models import Appointment, AppointmentQuery, MalformedRecord
from pqsync.logging import get_logger
from pqsync.services.locks import SyncInProgress, SyncLocks
from pqsync.services.prefetch import prefetched
from pqsync.services.sync_store import AppointmentStore, Lookups, PatientMatcher, RunContext
from pqsync.services.sync_types import (
    Actor,
    PatientResult,
    PreparedRun,
    Summary,
    SyncedAppointment,
    SyncInputError,
    SyncResult,
)

__all__ = [
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

PAGE_SIZE = 100
# Pages a window fetch may fetch ahead of the one being made ready, so that one slow request
# (a budget slot that waits for the database, a slow answer) leaves the writer work to do.
# Closing early wastes at most the request under way.
PREFETCH_PAGES = 3
NIGHTLY_WATERMARK = "nightly_watermark"
PRACTICE_DENSITY = "practice_density"
# A full-window reconcile replaces the incremental run when the watermark is this old.
RECONCILE_AFTER = timedelta(days=7)
# `updatedSince` is date-only: go back a whole day more so the boundary is never missed.
WATERMARK_OVERLAP = timedelta(days=1)
# How long a measured practice size is trusted for choosing a plan.
DENSITY_TRUSTED_FOR = timedelta(days=30)

CLI_ACTOR = Actor(kind="cli")
SCHEDULE_ACTOR = Actor(kind="schedule")

log = get_logger("pqsync.sync")


class AppointmentSource(Protocol):
    """What the sync needs of the IntakeQ client."""

    requests_sent: int

    def get_appointment(self, appointment_id: str) -> Appointment | None: ...

    def appointment_pages(self, query: AppointmentQuery) -> Generator[list[Record], None, None]: ...


def _no_progress(_label: str, _done: int, _total: int | None) -> None:
    return None


def _error_kind(exc: IntakeQError) -> str:
    if isinstance(exc, BudgetExhausted):
        return "budget"
    if isinstance(exc, IntakeQAuthError):
        return "auth"
    if isinstance(exc, IntakeQUnreachable):
        return "unreachable"
    return "intakeq"


# Errors that end the whole run: retrying another patient cannot help.
_RUN_ENDING = (BudgetExhausted, IntakeQAuthError, IntakeQUnreachable)


class SyncService:
    """Runs patient, organisation and nightly syncs against one IntakeQ source."""

    def __init__(
        self,
        engine: Engine,
        source: AppointmentSource,
        *,
        clock: Clock = lambda: datetime.now(UTC),
        default_timezone: str = "America/Denver",
        locks: SyncLocks | None = None,
    ) -> None:
        self.engine = engine
        self.source = source
        self.clock = clock
        self.default_timezone = default_timezone
        self.locks = locks or SyncLocks(engine, clock)
        self.store = AppointmentStore(engine, clock)

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

    def organization_window(self, org: Organization) -> Window:
        return default_window(
            self.clock(), ZoneInfo(org.timezone), org.window_days_back, org.window_days_ahead
        )

    def _patient_organization(self, session: Session, patient: Patient) -> Organization | None:
        return session.scalar(
            select(Organization)
            .join(Affiliation, Affiliation.organization_id == Organization.id)
            .where(Affiliation.patient_id == patient.id)
            .order_by(Organization.slug)
            .limit(1)
        )

    # -- preparing runs ---------------------------------------------------------------

    def prepare_patient(
        self, patient_ref: str, *, window: Window | None = None, actor: Actor = CLI_ACTOR
    ) -> PreparedRun:
        """Validate, take the patient's lock and open the run's sync_logs row."""
        with Session(self.engine, expire_on_commit=False) as session:
            patient = self.find_patient(session, patient_ref)
            org = self._patient_organization(session, patient)
            zone = org.timezone if org else self.default_timezone
            if window is None:
                window = (
                    self.organization_window(org)
                    if org
                    else default_window(self.clock(), ZoneInfo(zone))
                )
            return self._open_run(
                session,
                scope="patient",
                scope_key=f"patient:{patient.id}",
                label=f"patient {patient.id}",
                window=window,
                actor=actor,
                timezone=zone,
                patient_ids=[patient.id],
                organization=org,
            )

    def prepare_appointment(
        self,
        appointment_id: str,
        *,
        patient_hint: uuid.UUID | None = None,
        actor: Actor = CLI_ACTOR,
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
        prepared = self.prepare_patient(str(patient_id), actor=actor)
        return replace(prepared, appointment_id=appointment_id)

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
            return self._open_run(
                session,
                scope="organization",
                scope_key=f"organization:{org.id}",
                label=f"organization {org.slug}",
                window=window or self.organization_window(org),
                actor=actor,
                timezone=org.timezone,
                patient_ids=patient_ids,
                organization=org,
            )

    def prepare_nightly(self, *, actor: Actor = SCHEDULE_ACTOR) -> PreparedRun:
        """The run for every organisation at once; its window is the union of theirs."""
        with Session(self.engine, expire_on_commit=False) as session:
            orgs = list(session.scalars(select(Organization)))
            windows = [self.organization_window(org) for org in orgs] or [
                default_window(self.clock(), ZoneInfo(self.default_timezone))
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
    ) -> PreparedRun:
        run_id = uuid.uuid4()
        organization_id = organization.id if organization else None
        organization_name = organization.name if organization else None
        session.commit()  # end the read transaction before other connections write
        self.locks.acquire(scope_key, run_id, label)
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
                    },
                )
            )
            session.commit()
        except BaseException:
            self.locks.release(scope_key, run_id)
            raise
        return prepared

    # -- convenience: prepare + run -----------------------------------------------------

    def sync_patient(
        self,
        patient_ref: str,
        *,
        window: Window | None = None,
        actor: Actor = CLI_ACTOR,
        progress: ProgressCallback = _no_progress,
    ) -> SyncResult:
        """Sync one patient: one `client` query (all pages), filtered exactly."""
        return self.run(
            self.prepare_patient(patient_ref, window=window, actor=actor), progress=progress
        )

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
        """Execute a prepared run. IntakeQ failures give a failed result, never an exception."""
        try:
            with Session(self.engine, expire_on_commit=False) as session:
                patients = self._load_patients(session, prepared.patient_ids)
                ctx = RunContext(
                    run_id=prepared.run_id,
                    actor=prepared.actor,
                    zone=ZoneInfo(prepared.timezone),
                    lookups=Lookups.load(session),
                    matcher=PatientMatcher(patients),
                    results={
                        p.id: PatientResult(patient_id=p.id, patient_name=p.full_name)
                        for p in patients
                    },
                    result=SyncResult(
                        run_id=prepared.run_id,
                        scope=prepared.scope,
                        status="running",
                        window=prepared.window,
                        started_at=prepared.started_at,
                        finished_at=prepared.started_at,
                        summary=Summary(),
                        patients=[],
                        organization_id=prepared.organization_id,
                        organization_name=prepared.organization_name,
                    ),
                )
                ctx.keep_appointments = prepared.scope == "patient"
                ctx.result.patients = list(ctx.results.values())
                # The matcher learns ClientIds on these objects; they are written explicitly.
                session.expunge_all()
                session.commit()
                requests_before = self.source.requests_sent
                try:
                    self._execute(session, prepared, ctx, patients, progress)
                except IntakeQError as exc:
                    session.rollback()
                    self._fail(ctx.result, exc)
                except Exception as exc:
                    session.rollback()
                    ctx.result.status = "failed"
                    ctx.result.error = f"internal error ({type(exc).__name__})"
                    ctx.result.error_kind = "internal"
                    self._finish(
                        session, prepared, ctx, self.source.requests_sent - requests_before
                    )
                    raise
                self._finish(session, prepared, ctx, self.source.requests_sent - requests_before)
                return ctx.result
        finally:
            self.locks.release(prepared.scope_key, prepared.run_id)

    @staticmethod
    def _fail(result: SyncResult, exc: IntakeQError) -> None:
        result.status = "failed"
        result.error = str(exc)
        result.error_kind = _error_kind(exc)
        if isinstance(exc, BudgetExhausted):
            result.budget_frees_at = exc.frees_at

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
        patients: list[Patient],
        progress: ProgressCallback,
    ) -> None:
        if prepared.appointment_id is not None:
            ctx.result.plan = "refetch"
            self._refetch(session, prepared, ctx, prepared.appointment_id)
        elif prepared.scope == "patient":
            ctx.result.plan = "per_patient"
            self._per_patient(session, prepared, ctx, patients, progress)
        elif prepared.scope == "organization":
            self._organization(session, prepared, ctx, patients, progress)
        else:
            self._nightly(session, prepared, ctx, patients, progress)

    # -- plans --------------------------------------------------------------------------

    def _organization(
        self,
        session: Session,
        prepared: PreparedRun,
        ctx: RunContext,
        patients: list[Patient],
        progress: ProgressCallback,
    ) -> None:
        if not patients:
            ctx.result.plan = "window"
            return
        per_patient_cost = self._per_patient_cost(session, patients, prepared.window)
        density = self._known_density(session)
        session.commit()
        if density is not None:
            window_cost = int(density * prepared.window.days) // PAGE_SIZE + 1
            if window_cost > per_patient_cost:
                ctx.result.plan = "per_patient"
                self._per_patient(session, prepared, ctx, patients, progress)
                return

        def worth_continuing(first_page: list[Record]) -> bool:
            if density is not None:
                return True
            estimate = self._estimate_window_cost(first_page, prepared.window, ctx.zone)
            if estimate <= per_patient_cost + 1:
                return True
            # Remember the estimate so later runs choose without spending a probe.
            self._remember_density(session, estimate * PAGE_SIZE, prepared.window)
            return False

        ctx.result.plan = "window"
        if not self._window_fetch(session, prepared, ctx, patients, progress, worth_continuing):
            ctx.result.plan = "per_patient"
            self._per_patient(session, prepared, ctx, patients, progress)

    @staticmethod
    def _estimate_window_cost(first_page: list[Record], window: Window, zone: ZoneInfo) -> int:
        """Pages a whole-window fetch will take, judged from its first (latest) full page."""
        days = [r.start.astimezone(zone).date() for r in first_page if isinstance(r, Appointment)]
        if not days:
            return 1
        covered = max(1, (window.end - min(days)).days + 1)
        estimated = len(first_page) * window.days / covered
        return math.ceil(estimated / PAGE_SIZE) + (1 if estimated % PAGE_SIZE == 0 else 0)

    def _per_patient_cost(self, session: Session, patients: list[Patient], window: Window) -> int:
        """Requests for one `client` query per patient, from what we already store."""
        zone = ZoneInfo(self.default_timezone)
        start, end = window.bounds(zone)
        counts = dict(
            session.execute(
                select(AppointmentRow.patient_id, func.count())
                .where(
                    AppointmentRow.patient_id.in_([p.id for p in patients]),
                    AppointmentRow.deleted_at.is_(None),
                    AppointmentRow.start_time >= start,
                    AppointmentRow.start_time < end,
                )
                .group_by(AppointmentRow.patient_id)
            ).all()
        )
        return sum(counts.get(p.id, 0) // PAGE_SIZE + 1 for p in patients)

    def _known_density(self, session: Session) -> float | None:
        state = session.get(SyncState, PRACTICE_DENSITY)
        if state is None or self.clock() - state.updated_at > DENSITY_TRUSTED_FOR:
            return None
        per_day = state.value.get("per_day")
        return float(per_day) if isinstance(per_day, int | float) else None

    def _window_fetch(
        self,
        session: Session,
        prepared: PreparedRun,
        ctx: RunContext,
        patients: list[Patient],
        progress: ProgressCallback,
        keep_going: Callable[[list[Record]], bool] | None = None,
    ) -> bool:
        """Fetch the practice's whole window; False when `keep_going` chose to stop after page 1.

        A complete fetch proves absence: stored rows it did not return are soft-deleted.
        """
        window = prepared.window
        for result in ctx.results.values():
            result.state = "running"
        # A first sync of the window: its pages need no read of what is stored.
        ctx.presume_fresh = self.store.holds_none_in(window, ctx.zone, [p.id for p in patients])
        pages = self.source.appointment_pages(
            AppointmentQuery(start_date=window.start, end_date=window.end)
        )
        try:
            first = next(pages, [])
            self.store.write_page(session, ctx, first)
            records = len(first)
            progress("pages", 1, None)
            if len(first) == PAGE_SIZE and keep_going is not None and not keep_going(first):
                return False
            if len(first) == PAGE_SIZE:
                # Decided to go on: from here the next pages are fetched while one is made
                # ready and those before it are committed.
                # The prefetch is closed (its worker done with `pages`) before `pages` is.
                with (
                    closing(prefetched(pages, ahead=PREFETCH_PAGES)) as fetched,
                    self.store.writer(ctx) as writer,
                ):
                    for number, page in enumerate(fetched, start=2):
                        writer.write(page)
                        records += len(page)
                        self.locks.renew(prepared.scope_key, prepared.run_id)
                        progress("pages", number, None)
        finally:
            pages.close()
        self._remember_density(session, records, window)
        if ctx.unidentified_malformed:
            ctx.result.warnings.append(
                "a record without an Id was skipped: deletions were not inferred this run"
            )
        else:
            gone = self.store.absent_rows(session, ctx, [p.id for p in patients], window)
            self.store.soft_delete(session, ctx, gone, "absent from a complete window fetch")
        for result in ctx.results.values():
            result.state = "done"
        progress("patients", len(patients), len(patients))
        return True

    def _per_patient(
        self,
        session: Session,
        prepared: PreparedRun,
        ctx: RunContext,
        patients: list[Patient],
        progress: ProgressCallback,
    ) -> None:
        """One exact-filtered `client` query per patient; one failing patient fails alone."""
        window = prepared.window
        for done, patient in enumerate(patients):
            result = ctx.results[patient.id]
            if result.state == "done":
                continue
            result.state = "running"
            self._save_progress(session, prepared, ctx)
            returned = 0
            complete = not ctx.unidentified_malformed
            try:
                query = AppointmentQuery(
                    client=patient.email, start_date=window.start, end_date=window.end
                )
                for page in self.source.appointment_pages(query):
                    returned += len(page)
                    malformed_before = ctx.unidentified_malformed
                    self.store.write_page(session, ctx, page, only_patient=patient.id)
                    if ctx.unidentified_malformed and not malformed_before:
                        complete = False
                    self.locks.renew(prepared.scope_key, prepared.run_id)
            except _RUN_ENDING:
                result.state = "failed"
                raise
            except IntakeQError as exc:
                session.rollback()
                result.state = "failed"
                result.error = str(exc)
                result.summary.errors += 1
                ctx.result.warnings.append(f"patient {patient.id}: {exc}")
                progress("patients", done + 1, len(patients))
                continue
            if returned == 0 and patient.intakeq_client_id is not None:
                # IntakeQ found nobody by this email: an identity question, not proof of deletion.
                complete = False
                ctx.result.warnings.append(
                    f"patient {patient.id}: IntakeQ returned no client for the patient's email; "
                    "deletions were not inferred"
                )
            if complete:
                gone = self.store.absent_rows(session, ctx, [patient.id], window)
                self.store.soft_delete(session, ctx, gone, "absent from the patient's full fetch")
            result.state = "done"
            progress("patients", done + 1, len(patients))

    def _refetch(
        self, session: Session, prepared: PreparedRun, ctx: RunContext, appointment_id: str
    ) -> None:
        """`GET /appointments/{id}`: store what comes back; a 404 means IntakeQ deleted it."""
        for result in ctx.results.values():
            result.state = "running"
        fetched = self.source.get_appointment(appointment_id)
        if fetched is None:
            rows = self.store.rows_by_pq_id(session, [appointment_id])
            self.store.soft_delete(session, ctx, rows, "404 on re-fetch")
        else:
            self.store.write_page(session, ctx, [fetched])
        for result in ctx.results.values():
            result.state = "done"

    def _nightly(
        self,
        session: Session,
        prepared: PreparedRun,
        ctx: RunContext,
        patients: list[Patient],
        progress: ProgressCallback,
    ) -> None:
        watermark = self._watermark(session.get(SyncState, NIGHTLY_WATERMARK))
        session.commit()
        if watermark is None or prepared.started_at - watermark > RECONCILE_AFTER:
            ctx.result.plan = "window"
            self._window_fetch(session, prepared, ctx, patients, progress)
            return
        ctx.result.plan = "incremental"
        for result in ctx.results.values():
            result.state = "running"
        deleted_ids: list[str] = []
        for page in self.source.appointment_pages(AppointmentQuery(deleted_only=True)):
            deleted_ids.extend(r.id for r in page if isinstance(r, Appointment))
            ctx.result.malformed += sum(1 for r in page if isinstance(r, MalformedRecord))
        rows = self.store.rows_by_pq_id(session, deleted_ids)
        self.store.soft_delete(session, ctx, rows, "reported deleted by IntakeQ")
        since = (watermark - WATERMARK_OVERLAP).astimezone(ctx.zone).date()
        for number, page in enumerate(
            self.source.appointment_pages(AppointmentQuery(updated_since=since)), start=1
        ):
            self.store.write_page(session, ctx, page)
            self.locks.renew(prepared.scope_key, prepared.run_id)
            progress("pages", number, None)
        for result in ctx.results.values():
            result.state = "done"

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

    def _remember_density(self, session: Session, records: int, window: Window) -> None:
        self._put_state(
            session,
            PRACTICE_DENSITY,
            {"per_day": records / window.days, "records": records, "window_days": window.days},
        )

    def _put_state(self, session: Session, name: str, value: dict[str, Any]) -> None:
        begin_write(session)
        state = session.get(SyncState, name)
        if state is None:
            session.add(SyncState(name=name, value=value, updated_at=self.clock()))
        else:
            state.value = value
            state.updated_at = self.clock()
        session.commit()

    # -- finishing ------------------------------------------------------------------------

    def _progress_details(self, prepared: PreparedRun, ctx: RunContext) -> dict[str, Any]:
        results = ctx.results.values()
        return {
            "patients_total": len(prepared.patient_ids),
            "patients_done": sum(1 for r in results if r.state in ("done", "failed")),
            "triggered_by_name": prepared.actor.name,
            "patients": {
                str(r.patient_id): {
                    "state": r.state,
                    "summary": r.summary.as_dict(),
                    "error": r.error,
                }
                for r in results
            },
        }

    def _save_progress(self, session: Session, prepared: PreparedRun, ctx: RunContext) -> None:
        session.execute(
            update(SyncLog)
            .where(SyncLog.id == prepared.run_id)
            .values(details=self._progress_details(prepared, ctx))
        )
        session.commit()

    def _finish(
        self, session: Session, prepared: PreparedRun, ctx: RunContext, requests_made: int
    ) -> None:
        result = ctx.result
        result.requests_made = requests_made
        result.summary = Summary()
        for patient_result in ctx.results.values():
            result.summary.add(patient_result.summary)
        result.summary.errors += result.malformed
        failed = [r for r in ctx.results.values() if r.state == "failed"]
        if result.status != "failed" and failed and len(failed) == len(ctx.results):
            # Nobody could be synced: that is a failed run, not a partial one.
            result.status = "failed"
            result.error = failed[0].error
            result.error_kind = "intakeq"
        if result.status != "failed":
            result.status = "partial" if result.summary.errors else "success"
        result.finished_at = self.clock()
        details = self._progress_details(prepared, ctx)
        details.update(
            plan=result.plan,
            warnings=result.warnings[:200],
            unmatched_practitioners=result.unmatched_practitioners,
            unknown_clients=result.unknown_clients,
            unknown_appointments=result.unknown_appointments,
            error_kind=result.error_kind,
        )
        s = result.summary
        session.execute(
            update(SyncLog)
            .where(SyncLog.id == prepared.run_id)
            .values(
                status=result.status,
                finished_at=result.finished_at,
                appointments_new=s.new,
                appointments_updated=s.updated,
                appointments_unchanged=s.unchanged,
                appointments_deleted=s.deleted,
                appointments_errors=s.errors,
                requests_made=requests_made,
                error_message=result.error,
                details=details,
            )
        )
        synced = [r.patient_id for r in ctx.results.values() if r.state == "done"]
        if result.status != "failed" and synced:
            statement = update(Affiliation).where(Affiliation.patient_id.in_(synced))
            if prepared.scope == "organization":
                statement = statement.where(Affiliation.organization_id == prepared.organization_id)
            session.execute(statement.values(last_practiceq_sync_at=result.finished_at))
        if prepared.scope == "nightly" and result.status == "success":
            session.commit()
            self._put_state(session, NIGHTLY_WATERMARK, {"at": prepared.started_at.isoformat()})
        session.commit()
        log.info(
            "sync.finished",
            run_id=str(prepared.run_id),
            scope=prepared.scope,
            plan=result.plan,
            status=result.status,
            requests=requests_made,
            error_kind=result.error_kind,
            **s.as_dict(),
        )
