"""A run's record in `sync_logs`: its progress while it runs, its outcome when it ends
(counts, errors, warnings, who could not be matched), and the patients it synced."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from pqsync.db.tables import Affiliation, SyncLog
from pqsync.intakeq.errors import BudgetExhausted, IntakeQAuthError, IntakeQUnreachable
from pqsync.logging import get_logger
from pqsync.services.sync.context import RunContext
from pqsync.services.sync.locks import LeaseLost
from pqsync.services.sync.results import PreparedRun, Summary, SyncResult

log = get_logger("pqsync.sync")


def error_kind(exc: Exception) -> str:
    if isinstance(exc, BudgetExhausted):
        return "budget"
    if isinstance(exc, IntakeQAuthError):
        return "auth"
    if isinstance(exc, IntakeQUnreachable):
        return "unreachable"
    if isinstance(exc, LeaseLost):
        return "lease"
    return "intakeq"


def record_failure(result: SyncResult, exc: Exception) -> None:
    """What ended the run, in the result (and so in its record)."""
    result.status = "failed"
    result.error = str(exc)
    result.error_kind = error_kind(exc)
    if isinstance(exc, BudgetExhausted):
        result.budget_frees_at = exc.frees_at


def progress_details(prepared: PreparedRun, ctx: RunContext) -> dict[str, Any]:
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


def save_progress(session: Session, prepared: PreparedRun, ctx: RunContext) -> None:
    session.execute(
        update(SyncLog)
        .where(SyncLog.id == prepared.run_id)
        .values(details=progress_details(prepared, ctx))
    )
    session.commit()


def finish(
    session: Session,
    prepared: PreparedRun,
    ctx: RunContext,
    requests_made: int,
    finished_at: datetime,
) -> SyncResult:
    """Close the run: its outcome (a run nobody could be synced in is failed, one with
    errors partial), its record, and when each synced patient was last synced."""
    result = ctx.result
    result.requests_made = requests_made
    result.summary = Summary()
    for patient_result in ctx.results.values():
        result.summary.add(patient_result.summary)
    result.summary.errors += result.malformed
    failed = [r for r in ctx.results.values() if r.state == "failed"]
    if result.status == "paused":
        pass  # handed back or out of budget: neither failed nor done
    elif result.status != "failed" and failed and len(failed) == len(ctx.results):
        # Nobody could be synced: that is a failed run, not a partial one.
        result.status = "failed"
        result.error = failed[0].error
        result.error_kind = "intakeq"
    if result.status not in ("failed", "paused"):
        result.status = "partial" if result.summary.errors else "success"
    result.finished_at = finished_at
    details = progress_details(prepared, ctx)
    details.update(
        plan=result.plan,
        warnings=result.warnings,
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
        if prepared.scope in ("organization", "patient") and prepared.organization_id:
            statement = statement.where(Affiliation.organization_id == prepared.organization_id)
        session.execute(statement.values(last_practiceq_sync_at=result.finished_at))
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
    return result
