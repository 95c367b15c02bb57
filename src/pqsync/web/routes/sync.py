"""Starting syncs from the dashboard: one patient, or every patient of an organisation."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Annotated, Any, cast
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Header, Path
from fastapi.responses import JSONResponse
from sqlalchemy import Engine

from pqsync.db.tables import SyncLog
from pqsync.domain.windows import Window, WindowError, make_window, parse_day
from pqsync.services import health
from pqsync.services.dashboard import Dashboard, NotVisible, PatientScope, local_time
from pqsync.services.sync import (
    Actor,
    PreparedRun,
    SyncInProgress,
    SyncInputError,
    SyncResult,
    SyncService,
)
from pqsync.services.sync.results import PatientResult, Summary
from pqsync.settings import SettingsError
from pqsync.web.context import WebContext
from pqsync.web.deps import ContextDep, DashboardDep, SyncUser
from pqsync.web.errors import ApiError, not_found, responses, retry_later
from pqsync.web.schemas import (
    OrganizationSyncOut,
    PatientResultOut,
    PatientSyncOut,
    SummaryOut,
    SyncAction,
    SyncedAppointmentOut,
    SyncRequest,
    SyncRunOut,
)

router = APIRouter(prefix="/api/partner-dashboard", tags=["sync"])

PreferHeader = Annotated[
    str | None,
    Header(description="`respond-async`: answer 202 at once with the run's Location."),
]
ACCEPTED_RESPONSE: dict[int | str, dict[str, Any]] = {
    202: {
        "model": SyncRunOut,
        "description": "Started (with `Prefer: respond-async`); progress at `Location`.",
    }
}
SYNC_ERRORS = responses(400, 401, 403, 404, 409, 422, 429, 502)


def requested_window(body: SyncRequest | None) -> Window | None:
    """The body's dateRange, validated (422 names the field and why), or None."""
    if body is None or body.date_range is None:
        return None
    try:
        start = parse_day("startDate", body.date_range.start_date)
        end = parse_day("endDate", body.date_range.end_date)
        return make_window(start, end)
    except WindowError as exc:
        raise ApiError(422, "invalid_date_range", f"dateRange.{exc.field}: {exc.reason}") from None


def total_of(results: Iterable[PatientResult]) -> Summary:
    total = Summary()
    for result in results:
        total.add(result.summary)
    return total


def wants_async(prefer: str | None) -> bool:
    tokens = (part.split("=")[0].strip().lower() for part in (prefer or "").split(","))
    return "respond-async" in tokens


def start_run(
    ctx: WebContext,
    what: str,
    prepare: Callable[[SyncService], PreparedRun],
    zone: ZoneInfo | None = None,
) -> tuple[SyncService, PreparedRun]:
    """Prepare a run of `what` ("this patient"): 404 if its patient or organisation is gone,
    409 naming the run already going."""
    service = ctx.sync_service()
    try:
        return service, prepare(service)
    except SyncInputError:
        raise not_found("patient or organization") from None
    except SyncInProgress as exc:
        if exc.paused_until is not None:
            shown_in = zone or ZoneInfo(ctx.app.settings.timezone)
            raise paused(what, exc.run_id, exc.paused_until, shown_in, ctx.now()) from None
        raise in_progress(what, exc) from None


def paused(
    what: str, run_id: uuid.UUID, until: datetime, zone: ZoneInfo, now: datetime
) -> ApiError:
    """429: the sync of `what` is paused until the day's requests free up; it resumes then
    by itself, as the same run."""
    local = local_time(until, zone)
    return retry_later(
        "sync_paused",
        f"the sync of {what} is paused: the day's IntakeQ requests are used up; it resumes "
        f"by itself at {local.isoformat()} (run {run_id})",
        retry_at=local,
        now=now,
        run_id=run_id,
    )


def in_progress(what: str, exc: SyncInProgress) -> ApiError:
    """409 naming the run of `what` already going, with its Location."""
    return ApiError(
        409,
        "sync_in_progress",
        f"a sync of {what} is already running (run {exc.run_id})",
        run_id=exc.run_id,
        headers={"Location": run_location(exc.run_id)},
    )


def run_location(run_id: object) -> str:
    return f"{router.prefix}/sync-runs/{run_id}"


def failure(result: SyncResult, zone: ZoneInfo, now: datetime) -> ApiError:
    """The answer for a run that failed: 429 when the budget is spent, 502 otherwise."""
    if result.error_kind == "budget" and result.budget_frees_at is not None:
        frees = local_time(result.budget_frees_at, zone)
        return retry_later(
            "intakeq_budget_exhausted",
            "the daily IntakeQ request budget is used up; it frees up at "
            f"{frees.isoformat()}, and the sync (paused) resumes by itself then",
            retry_at=frees,
            now=now,
            run_id=result.run_id,
        )
    if result.error_kind == "unreachable":
        message = "IntakeQ could not be reached; nothing was changed, try again later"
        return ApiError(502, "intakeq_unreachable", message, run_id=result.run_id)
    if result.error_kind == "auth":
        message = "IntakeQ refused the clinic's API key; the clinic has to renew it"
        return ApiError(502, "intakeq_auth_failed", message, run_id=result.run_id)
    message = "IntakeQ answered with an error; the run is recorded, try again later"
    return ApiError(502, "intakeq_error", message, run_id=result.run_id)


def accepted(
    dashboard: Dashboard, prepared: PreparedRun, engine: Engine, now: datetime
) -> JSONResponse:
    """202 with the new run's progress and its Location."""
    dashboard.session.commit()  # a new snapshot: the run's row was written by another connection
    run = dashboard.run(str(prepared.run_id))
    dashboard.record("api_sync_run", [p.patient_id for p in run.patients], f"run {run.run_id}")
    progress = SyncRunOut.model_validate(run)
    progress.waiting = health.waiting_for(engine, now, progress.run_id, progress.status)
    return JSONResponse(
        progress.model_dump(mode="json", by_alias=True),
        status_code=202,
        headers={
            "Location": run_location(prepared.run_id),
            "Preference-Applied": "respond-async",
        },
    )


def start_user_run(
    ctx: WebContext,
    dashboard: Dashboard,
    what: str,
    body: SyncRequest | None,
    prepare: Callable[[SyncService, Window | None, Actor], PreparedRun],
    zone: ZoneInfo | None = None,
    organization_id: uuid.UUID | None = None,
) -> tuple[SyncService, PreparedRun]:
    """A run started by the caller, over the body's dateRange (or the default window), if
    their share of the day's requests allows (429 saying when they may sync again)."""
    window = requested_window(body)
    viewer = dashboard.viewer
    # End the request's read and hand its connection back: preparing takes connections of
    # its own, and a request holding two at once can starve the pool under a stampede.
    dashboard.session.commit()
    fair_share_check(ctx, organization_id, zone, viewer.user_id)
    actor = Actor(kind="user", user_id=viewer.user_id, name=viewer.name)
    return start_run(ctx, what, lambda service: prepare(service, window, actor), zone)


def fair_share_check(
    ctx: WebContext,
    organization_id: uuid.UUID | None,
    zone: ZoneInfo | None,
    user_id: uuid.UUID | None = None,
) -> None:
    """429, saying when the person may sync again, past their share of the day's requests."""
    try:
        usage = ctx.app.budget_usage()
    except SettingsError:
        return  # no IntakeQ key: the run itself fails and says why
    now = ctx.now()
    refusal = ctx.app.fair_share().refusal(organization_id, usage, now, user_id)
    if refusal is None:
        return
    at = local_time(refusal.retry_at, zone or ZoneInfo(ctx.app.settings.timezone))
    raise retry_later(
        refusal.code,
        f"{refusal.message}; you may sync again at {at.isoformat()}",
        retry_at=at,
        now=now,
    )


# A patient synced this recently is not synced again: the answer is that sync's.
RECENT_SYNC = timedelta(minutes=1)


def recent_sync_out(dashboard: Dashboard, run: SyncLog, scope: PatientScope) -> PatientSyncOut:
    """The answer of the patient's sync that just finished, read back (no IntakeQ request):
    its counts, and the patient's appointments with what that sync did to each."""
    visible = scope.details_visible
    actions = dashboard.actions_of(run.id) if visible else {}
    shown = dashboard.appointments(scope) if visible else []
    assert run.finished_at is not None
    incomplete = dashboard.run_incomplete(run)
    return PatientSyncOut(
        success=run.status == "success" and not incomplete,
        # Set only when there is a reason: a complete answer is the proposal's shape.
        **({"incomplete": incomplete} if incomplete else {}),
        patient_id=scope.patient.id,
        patient_name=scope.patient.full_name,
        synced_at=local_time(run.finished_at, scope.zone),
        summary=SummaryOut(
            new=run.appointments_new,
            updated=run.appointments_updated,
            unchanged=run.appointments_unchanged,
            errors=run.appointments_errors,
        )
        if visible
        else None,
        appointments=[
            SyncedAppointmentOut(
                id=a.id,
                pq_appointment_id=a.pq_appointment_id,
                start_time=a.start_time,
                provider_name=a.provider_name,
                status=a.status,
                sync_action=cast(SyncAction, actions.get(a.id, "unchanged")),
            )
            for a in shown
        ],
    )


def patient_sync_out(result: SyncResult, scope: PatientScope) -> PatientSyncOut:
    mine = next((p for p in result.patients if p.patient_id == scope.patient.id), None)
    shown = mine.appointments if mine is not None and scope.details_visible else []
    return PatientSyncOut(
        # A partial run answers 200 with success false: the patient's data may be out of date.
        success=result.status == "success",
        **({"incomplete": list(result.incomplete)} if result.status != "success" else {}),
        patient_id=scope.patient.id,
        patient_name=scope.patient.full_name,
        synced_at=local_time(result.finished_at, scope.zone),
        summary=SummaryOut.model_validate(result.summary) if scope.details_visible else None,
        appointments=[
            SyncedAppointmentOut(
                id=a.id,
                pq_appointment_id=a.pq_appointment_id,
                start_time=local_time(a.start_time, scope.zone),
                provider_name=a.provider_name,
                status=a.status,
                sync_action=cast(SyncAction, a.action),
            )
            for a in shown
        ],
    )


@router.post(
    "/patients/{patientId}/sync",
    response_model=PatientSyncOut,
    # `incomplete` only when set (a partial sync): a complete answer is the proposal's.
    response_model_exclude_unset=True,
    responses={**ACCEPTED_RESPONSE, **SYNC_ERRORS},
)
def sync_patient(
    patient_id: Annotated[str, Path(alias="patientId")],
    _user: SyncUser,
    ctx: ContextDep,
    dashboard: DashboardDep,
    body: SyncRequest | None = None,
) -> PatientSyncOut | JSONResponse:
    """Sync one patient's appointments from IntakeQ now and return what changed.

    Without active ROI consent a partner still syncs, but `appointments` comes back empty.
    A sync that must wait longer than `PQSYNC_SYNC_ANSWER_SECONDS` (IntakeQ's request
    limit, a slow IntakeQ) answers 202 with its progress and Location, and goes on."""
    try:
        scope = dashboard.patient(patient_id)
    except NotVisible:
        raise not_found("patient") from None
    if body is None or body.date_range is None:
        recent = dashboard.recent_patient_sync(scope, RECENT_SYNC)
        if recent is not None:
            return recent_sync_out(dashboard, recent, scope)
    service, prepared = start_user_run(
        ctx,
        dashboard,
        "this patient",
        body,
        # A partner's run is their organisation's: its window, zone and history.
        lambda s, window, actor: s.prepare_patient(
            str(scope.patient.id),
            window=window,
            actor=actor,
            organization_id=None
            if dashboard.viewer.is_staff or scope.organization is None
            else scope.organization.id,
        ),
        scope.zone,
        None if dashboard.viewer.is_staff or scope.organization is None else scope.organization.id,
    )
    result = ctx.run_sync_within(service, prepared, ctx.app.settings.sync_answer_seconds)
    if result is None:
        return accepted(dashboard, prepared, ctx.app.engine, ctx.now())
    if not result.ok:
        raise failure(result, scope.zone, ctx.now())
    dashboard.record("api_sync_patient", [scope.patient.id], f"run {result.run_id}")
    return patient_sync_out(result, scope)


@router.post(
    "/organizations/{orgId}/sync-all-patients",
    response_model=OrganizationSyncOut,
    responses={**ACCEPTED_RESPONSE, **SYNC_ERRORS},
)
def sync_organization(
    org_id: Annotated[str, Path(alias="orgId", description="The organisation's id or slug.")],
    _user: SyncUser,
    ctx: ContextDep,
    dashboard: DashboardDep,
    prefer: PreferHeader = None,
    body: SyncRequest | None = None,
) -> OrganizationSyncOut | JSONResponse:
    """Sync every patient of the organisation; waits for the end unless
    `Prefer: respond-async` (then 202 and `Location: /api/partner-dashboard/sync-runs/{id}`)."""
    try:
        org = dashboard.organization(org_id)
    except NotVisible:
        raise not_found("organization") from None
    service, prepared = start_user_run(
        ctx,
        dashboard,
        "this organization",
        body,
        lambda s, window, actor: s.prepare_organization(str(org.id), window=window, actor=actor),
        dashboard.zone_of(org),
        None if dashboard.viewer.is_staff else org.id,
    )
    if wants_async(prefer):
        ctx.run_sync_later(prepared)
        return accepted(dashboard, prepared, ctx.app.engine, ctx.now())
    result = ctx.run_sync(service, prepared)
    zone = dashboard.zone_of(org)
    if not result.ok:
        raise failure(result, zone, ctx.now())
    counted = dashboard.counts_visible(p.patient_id for p in result.patients)
    shown = [p for p in result.patients if p.patient_id in counted]
    dashboard.record(
        "api_sync_organization", [p.patient_id for p in result.patients], f"run {result.run_id}"
    )
    return OrganizationSyncOut(
        success=result.status == "success",
        organization_id=org.id,
        organization_name=org.name,
        synced_at=local_time(result.finished_at, zone),
        patients_processed=len(result.patients),
        total_summary=SummaryOut.model_validate(
            result.summary if dashboard.viewer.is_staff else total_of(shown)
        ),
        patient_results=[
            PatientResultOut(
                patient_id=p.patient_id,
                patient_name=p.patient_name,
                success=p.complete,
                summary=SummaryOut.model_validate(p.summary) if p.patient_id in counted else None,
                error=p.error,
            )
            for p in result.patients
        ],
    )
