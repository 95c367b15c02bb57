"""The clinic's staff: every run, filtered by type and outcome, and the alerts raised."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from pqsync.services import staff_views
from pqsync.services.auth import Principal
from pqsync.services.dashboard import local_time
from pqsync.services.staff_views import RUN_STATUSES, RunFilters
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
    if status is not None and status not in RUN_STATUSES:
        raise ApiError(422, "invalid_status", f"status must be one of {', '.join(RUN_STATUSES)}")
    filters = RunFilters(run_type=run_type, status=status)
    lines = staff_views.sync_runs(dashboard.session, filters, dashboard.default_zone, limit=limit)
    runs = [
        RunListEntryOut(
            run_id=line.id,
            type=line.run_type,
            scope=line.sync_type,
            status=line.status,
            triggered_by=line.triggered_by,
            organization_name=line.organization_name,
            started_at=line.started_at.replace(microsecond=0),
            duration_seconds=(line.finished_at - line.started_at).total_seconds()
            if line.finished_at
            else None,
            new=line.new,
            updated=line.updated,
            unchanged=line.unchanged,
            deleted=line.deleted,
            errors=line.errors,
            requests_made=line.requests,
            error=line.error,
        )
        for line in lines
    ]
    return RunListOut(runs=runs)


@router.get("/alerts", responses=responses(401, 403))
def alerts(_user: StaffUser, dashboard: DashboardDep) -> AlertsOut:
    """Alerts raised (failure streaks opened, recoveries, missed nights), newest first, and
    how each was delivered (`email`, `log` when no SMTP is set up, `failed`)."""
    rows = staff_views.newest_alerts(dashboard.session, LIST_LIMIT)
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
