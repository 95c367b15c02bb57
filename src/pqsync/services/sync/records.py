"""A run's record in `sync_logs`: its progress while it runs, its outcome when it ends
(counts, errors, warnings, who could not be matched), and the patients it synced."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, update
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
    """What ended the run, in the result (and so in its record). The day's requests running
    out pauses the run (it resumes, as the same run, once they free up): not a failure."""
    result.status = "paused" if isinstance(exc, BudgetExhausted) else "failed"
    result.error = str(exc)
    result.error_kind = error_kind(exc)
    if isinstance(exc, BudgetExhausted):
        result.budget_frees_at = exc.frees_at


def paused_message(resumes_at: datetime, zone: ZoneInfo) -> str:
    """What a paused run says: when it resumes, with the date, in the organisation's zone."""
    local = resumes_at.astimezone(zone)
    return (
        "paused: the day's IntakeQ requests are used up; resumes at "
        f"{local.strftime('%Y-%m-%d %H:%M')} {local.tzname()}"
    )


def progress_details(prepared: PreparedRun, ctx: RunContext) -> dict[str, Any]:
    results = ctx.results.values()
    details: dict[str, Any] = {
        "patients_total": len(prepared.patient_ids),
        "patients_done": sum(1 for r in results if r.state in ("done", "failed")),
        "triggered_by_name": prepared.actor.name,
        "patients": {
            str(r.patient_id): {
                "state": r.state,
                "summary": r.summary.as_dict(),
                "error": r.error,
                "incomplete": r.incomplete,
                "error_kind": r.error_kind,
            }
            for r in results
        },
    }
    if ctx.result.plan is not None:
        details["plan"] = ctx.result.plan
    if ctx.pages_done:
        details["pages"] = {"done": ctx.pages_done, "about": ctx.pages_about}
    return details


def incomplete_reasons(ctx: RunContext) -> list[str]:
    """Why the run is partial: the run's own reasons, then each patient reason with how many
    patients it concerns (patients are named on their own pages, not here)."""
    reasons = list(ctx.incomplete_reasons)
    counted: dict[str, int] = {}
    for result in ctx.results.values():
        for reason in result.incomplete:
            if reason not in ctx.incomplete_reasons:  # said once, for the whole run
                counted[reason] = counted.get(reason, 0) + 1
    for reason, count in counted.items():
        reasons.append(reason if count == 1 else f"{reason} ({count} patients)")
    return reasons


def save_progress(session: Session, prepared: PreparedRun, ctx: RunContext) -> None:
    session.execute(
        update(SyncLog)
        .where(SyncLog.id == prepared.run_id)
        .values(details=progress_details(prepared, ctx))
    )
    session.commit()


# A wait shorter than this is not worth a word (or a write).
NOTED_WAIT_SECONDS = 2.0


def note_wait(
    engine: Engine, prepared: PreparedRun, ctx: RunContext, seconds: float, why: str
) -> None:
    """Record in the run's progress that it waits `seconds` for IntakeQ's request limit
    (`why`: minute_limit | rate_limited); the next progress save clears it.

    Written on a connection of its own, never the run's: the run may be inside a write it
    must not commit half-way. Best effort: on SQLite, where the run's own open write would
    block it, it gives up after a moment instead of waiting."""
    if seconds < NOTED_WAIT_SECONDS:
        return
    details = progress_details(prepared, ctx)
    until = datetime.now(UTC) + timedelta(seconds=seconds)  # real time: the wait is real
    details["waiting"] = {"until": until.isoformat(), "reason": why}
    sqlite = engine.dialect.name == "sqlite"
    try:
        with engine.connect() as conn:
            busy = conn.exec_driver_sql("PRAGMA busy_timeout").scalar() if sqlite else None
            if sqlite:
                conn.exec_driver_sql("PRAGMA busy_timeout = 200")
            else:  # never wait long on a lock (the run's own transaction could hold one)
                conn.exec_driver_sql("SET LOCAL lock_timeout = '1s'")
            try:
                conn.execute(
                    update(SyncLog)
                    .where(SyncLog.id == prepared.run_id, SyncLog.status == "running")
                    .values(details=details)
                )
                conn.commit()
            finally:
                if sqlite:
                    conn.rollback()
                    conn.exec_driver_sql(f"PRAGMA busy_timeout = {int(busy or 0)}")
    except Exception as exc:  # a word about a wait must not stop the run
        log.info("sync.wait_not_noted", run_id=str(prepared.run_id), error=type(exc).__name__)


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
    flagged = {**ctx.identity.shared, **ctx.identity.contested()}
    for patient_id, carriers in flagged.items():
        if patient_id in ctx.results:
            ctx.warn(f"patient {patient_id}: {carriers} IntakeQ clients share this email")
            ctx.incomplete(
                patient_id,
                f"{carriers} IntakeQ clients share this patient's email, so neither's "
                "appointments are shown; staff should give each client its own email in IntakeQ",
            )
    for patient_id in ctx.identity.followed_late():
        ctx.incomplete(
            patient_id,
            "PracticeQ moved this patient to a new client profile while we were reading; "
            "some of their appointments may be missing until the next sync",
        )
    for patient_id in ctx.identity.unconfirmed | ctx.identity.unasked():
        ctx.incomplete(
            patient_id,
            "this patient's IntakeQ client could not be confirmed this run (its request "
            "budget was spent); their appointments may be missing until the next sync",
        )
    result.incomplete = incomplete_reasons(ctx)
    failed = [r for r in ctx.results.values() if r.state == "failed"]
    paused = result.status == "paused"
    if paused and result.budget_frees_at is not None:
        result.error = paused_message(result.budget_frees_at, ctx.display_zone)
    if result.status == "running" and failed and len(failed) == len(ctx.results):
        # Nobody could be synced: that is a failed run, not a partial one.
        result.status = "failed"
        result.error = failed[0].error
        result.error_kind = "intakeq"
    if result.status == "running":
        partial = result.summary.errors or result.incomplete
        result.status = "partial" if partial else "success"
    result.finished_at = finished_at
    details = progress_details(prepared, ctx)
    details.update(
        plan=result.plan,
        warnings=result.warnings,
        unmatched_practitioners=result.unmatched_practitioners,
        unknown_clients=result.unknown_clients,
        unknown_appointments=result.unknown_appointments,
        unknown_by_client=result.unknown_by_client,
        error_kind=result.error_kind,
        incomplete=result.incomplete,
    )
    if paused and result.budget_frees_at is not None:
        details["resumes_at"] = result.budget_frees_at.isoformat()
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
    # "Last synced" only for the patients whose data this run made complete (a paused run's
    # finished patients too).
    synced = (
        [] if ctx.incomplete_reasons else [r.patient_id for r in ctx.results.values() if r.complete]
    )
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
