"""The clinic's staff: every run, filtered by type and outcome, and the alerts raised."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from sqlalchemy import select

from pqsync.db.tables import Alert, Organization, PartnerUser, SyncLog
from pqsync.domain.run_types import RUN_TYPES
from pqsync.services.auth import Principal
from pqsync.services.dashboard import local_time
from pqsync.web.deps import CurrentUser, DashboardDep
from pqsync.web.errors import ApiError, responses
from pqsync.web.schemas import AlertOut, AlertsOut, RunListEntryOut, RunListOut, RunType

router = APIRouter(prefix="/api/admin", tags=["admin"])
LIST_LIMIT = 200


def staff(user: CurrentUser) -> Principal:
    if not user.is_staff:
        raise ApiError(403, "forbidden", "only the clinic's staff may see this")
    return user


StaffUser = Annotated[Principal, Depends(staff)]


@router.get("/sync-runs", responses=responses(401, 403, 422))
def sync_runs(
    _user: StaffUser,
    dashboard: DashboardDep,
    run_type: Annotated[RunType | None, Query(alias="type")] = None,
    status: Annotated[str | None, Query(max_length=16)] = None,
    limit: Annotated[int, Query(ge=1, le=LIST_LIMIT)] = 50,
) -> RunListOut:
    """Runs, newest first: type (`manual_patient`, `manual_org`, `automated_daily`,
    `webhook`), trigger, counts, duration and error; `type` and `status` filter."""
    query = (
        select(SyncLog, PartnerUser, Organization)
        .outerjoin(PartnerUser, PartnerUser.id == SyncLog.triggered_by_user_id)
        .outerjoin(Organization, Organization.id == SyncLog.organization_id)
        .order_by(SyncLog.started_at.desc())
        .limit(limit)
    )
    if run_type is not None:
        query = query.where(SyncLog.run_type == run_type)
    if status is not None:
        query = query.where(SyncLog.status == status)
    zone = dashboard.default_zone
    runs = []
    for run, user, org in dashboard.session.execute(query).all():
        duration = (run.finished_at - run.started_at).total_seconds() if run.finished_at else None
        runs.append(
            RunListEntryOut(
                run_id=run.id,
                type=run.run_type if run.run_type in RUN_TYPES else None,
                scope=run.sync_type,
                status=run.status,
                triggered_by=dashboard.trigger_label(run, user),
                organization_name=org.name if org else None,
                started_at=local_time(run.started_at, zone),
                duration_seconds=duration,
                new=run.appointments_new,
                updated=run.appointments_updated,
                unchanged=run.appointments_unchanged,
                deleted=run.appointments_deleted,
                errors=run.appointments_errors,
                requests_made=run.requests_made,
                error=run.error_message,
            )
        )
    return RunListOut(runs=runs)


@router.get("/alerts", responses=responses(401, 403))
def alerts(_user: StaffUser, dashboard: DashboardDep) -> AlertsOut:
    """Alerts raised (failure streaks opened, recoveries, missed nights), newest first, and
    how each was delivered (`email`, `log` when no SMTP is set up, `failed`)."""
    rows = dashboard.session.scalars(
        select(Alert).order_by(Alert.created_at.desc()).limit(LIST_LIMIT)
    )
    zone = dashboard.default_zone
    return AlertsOut(
        alerts=[
            AlertOut(
                kind=a.kind,
                subject=a.subject,
                body=a.body,
                delivery=a.delivery,
                run_id=a.run_id,
                created_at=local_time(a.created_at, zone),
            )
            for a in rows
        ]
    )
