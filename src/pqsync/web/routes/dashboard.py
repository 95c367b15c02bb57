"""What partners read: the roster, a patient's appointments and sync history, run progress."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query

from pqsync.domain import visibility
from pqsync.services import health
from pqsync.services.dashboard import (
    ROSTER_PAGE_DEFAULT,
    ROSTER_PAGE_MAX,
    BadCursor,
    ConsentRequired,
    NotVisible,
    PatientScope,
)
from pqsync.services.live_updates import change_mark
from pqsync.web.deps import ContextDep, DashboardDep, SyncUser
from pqsync.web.errors import ApiError, not_found, responses
from pqsync.web.routes.sync import requested_window
from pqsync.web.schemas import (
    AppointmentOut,
    AppointmentsOut,
    ChangesOut,
    DateRange,
    PatientRefOut,
    RosterEntryOut,
    RosterOut,
    SyncHistoryOut,
    SyncPlanOut,
    SyncRequest,
    SyncRunOut,
)

router = APIRouter(prefix="/api/partner-dashboard", tags=["dashboard"])

PatientId = Annotated[str, Path(alias="patientId")]


def visible_patient(dashboard: DashboardDep, patient_id: PatientId) -> PatientScope:
    try:
        return dashboard.patient(patient_id)
    except NotVisible:
        raise not_found("patient") from None


@router.get("/patients", responses=responses(401, 404, 422))
def roster(
    dashboard: DashboardDep,
    organization_id: Annotated[
        uuid.UUID | None,
        Query(alias="organizationId", description="Staff: only this organisation."),
    ] = None,
    q: Annotated[
        str | None, Query(max_length=100, description="Only patients whose name holds each word.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=ROSTER_PAGE_MAX)] = ROSTER_PAGE_DEFAULT,
    cursor: Annotated[
        str | None, Query(max_length=80, description="`nextCursor` of the previous page.")
    ] = None,
) -> RosterOut:
    """The organisation's patients, a page at a time (by organisation, last and first name):
    ROI consent, next appointment (only while consent is active), last sync."""
    viewer = dashboard.viewer
    if organization_id is not None and not visibility.may_see_organization(viewer, organization_id):
        raise not_found("organization")
    try:
        page = dashboard.roster(organization_id, search=q, limit=limit, cursor=cursor)
    except BadCursor as exc:
        raise ApiError(422, "invalid_cursor", str(exc)) from None
    dashboard.record("api_roster", [row.id for row in page.rows])
    return RosterOut(
        patients=[RosterEntryOut.model_validate(row) for row in page.rows],
        next_cursor=page.next_cursor,
    )


@router.get("/organizations/{orgId}/sync-plan", responses=responses(401, 403, 404, 422))
def sync_plan(
    org_id: Annotated[str, Path(alias="orgId", description="The organisation's id or slug.")],
    _user: SyncUser,
    ctx: ContextDep,
    dashboard: DashboardDep,
    start_date: Annotated[str | None, Query(alias="startDate", max_length=10)] = None,
    end_date: Annotated[str | None, Query(alias="endDate", max_length=10)] = None,
) -> SyncPlanOut:
    """What a Sync all of the organisation would cover and cost: patients, the date range
    (`startDate`/`endDate`, else the default), at most how many IntakeQ requests, about how
    long, and today's budget left."""
    try:
        org = dashboard.organization(org_id)
    except NotVisible:
        raise not_found("organization") from None
    window = None
    if start_date is not None and end_date is not None:
        window = requested_window(
            SyncRequest(date_range=DateRange(start_date=start_date, end_date=end_date))
        )
    plan = ctx.sync_all_plan(dashboard.session, org, window)
    return SyncPlanOut(
        organization_id=org.id,
        organization_name=org.name,
        patients=plan.patients,
        start_date=plan.start,
        end_date=plan.end,
        max_requests=plan.requests,
        estimated_minutes=plan.minutes,
        requests_left_today=plan.left_today,
        daily_limit=plan.daily_limit,
    )


@router.get("/patients/{patientId}/appointments", responses=responses(401, 403, 404, 422))
def appointments(dashboard: DashboardDep, patient_id: PatientId) -> AppointmentsOut:
    """The patient's appointments (soft-deleted ones left out); 403 while ROI consent with
    the caller's organisation is not active."""
    scope = visible_patient(dashboard, patient_id)
    try:
        rows = dashboard.appointments(scope)
    except ConsentRequired as exc:
        raise ApiError(403, "roi_consent_required", str(exc)) from None
    dashboard.record("api_appointments", [scope.patient.id])
    return AppointmentsOut(
        patient=PatientRefOut.model_validate(scope.ref),
        appointments=[AppointmentOut.model_validate(row) for row in rows],
    )


@router.get("/patients/{patientId}/sync-history", responses=responses(401, 404, 422))
def sync_history(dashboard: DashboardDep, patient_id: PatientId) -> SyncHistoryOut:
    """Finished syncs that covered the patient, newest first, and who started each."""
    scope = visible_patient(dashboard, patient_id)
    history = SyncHistoryOut.model_validate(dashboard.sync_history(scope))
    dashboard.record("api_sync_history", [scope.patient.id])
    return history


@router.get("/changes", responses=responses(401, 404, 422))
def changes(
    dashboard: DashboardDep,
    patient_id: Annotated[
        str | None, Query(alias="patientId", max_length=64, description="Only this patient.")
    ] = None,
    organization_id: Annotated[
        uuid.UUID | None,
        Query(alias="organizationId", description="Staff: only this organisation."),
    ] = None,
) -> ChangesOut:
    """A mark of the newest change (appointment change or sync) of a patient, else of the
    organisation's patients: an open page polls it and refreshes itself when it differs."""
    if patient_id is not None:
        scope = visible_patient(dashboard, patient_id)
        return ChangesOut(mark=change_mark(dashboard.session, patient_id=scope.patient.id))
    viewer = dashboard.viewer
    if organization_id is None and not visibility.is_staff(viewer):
        organization_id = viewer.organization_id
    if organization_id is not None and not visibility.may_see_organization(viewer, organization_id):
        raise not_found("organization")
    return ChangesOut(mark=change_mark(dashboard.session, organization_id=organization_id))


@router.get("/sync-runs/{runId}", responses=responses(401, 404, 422), name="sync_run")
def sync_run(
    dashboard: DashboardDep, ctx: ContextDep, run_id: Annotated[str, Path(alias="runId")]
) -> SyncRunOut:
    """A run's progress: status, patients total and done, each patient's state and counts;
    `waiting` says why a run that has not started is not moving (no worker)."""
    try:
        progress = dashboard.run(run_id)
    except NotVisible:
        raise not_found("run") from None
    dashboard.record("api_sync_run", [p.patient_id for p in progress.patients], f"run {run_id}")
    out = SyncRunOut.model_validate(progress)
    out.waiting = health.waiting_for(ctx.app.engine, ctx.now(), out.run_id, out.status)
    return out
