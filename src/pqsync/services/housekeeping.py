"""Pruning on the schedule, so that no table grows without bound: expired sessions, old
failed login attempts, request-budget rows past their window; sync logs only past the
retention setting. Records are not logs: the access record is never pruned here, and the
change history and successful logins are kept at least `RETENTION_FLOOR` (six years)
whatever the setting says."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Engine, and_, delete, or_

from pqsync.db.tables import (
    IntakeQRequest,
    LoginAttempt,
    NightlyClaim,
    PasswordReset,
    PatientActivity,
    SyncLog,
    UserSession,
    WebhookEvent,
    WorkerHeartbeat,
)
from pqsync.services.access import RETENTION_FLOOR

# The budget's day window is 24 h (plus a small margin): older requests count for nothing.
REQUEST_LOG_KEPT = timedelta(days=2)
# Login throttling looks back at most a day.
LOGIN_ATTEMPTS_KEPT = timedelta(days=7)
WEBHOOK_EVENTS_KEPT = timedelta(days=2)
CLAIMS_KEPT = timedelta(days=60)
HEARTBEATS_KEPT = timedelta(days=7)
RESETS_KEPT = timedelta(days=30)


def prune(engine: Engine, now: datetime, *, log_retention_days: int | None) -> dict[str, int]:
    """Delete what has outlived its use; returns rows deleted per table."""
    statements = {
        "user_sessions": delete(UserSession).where(
            or_(UserSession.expires_at < now, UserSession.revoked_at < now - timedelta(days=1))
        ),
        # Failures serve throttling only; successes are the login history, kept as a record.
        "login_attempts": delete(LoginAttempt).where(
            or_(
                and_(
                    LoginAttempt.succeeded.is_(False),
                    LoginAttempt.attempted_at < now - LOGIN_ATTEMPTS_KEPT,
                ),
                LoginAttempt.attempted_at < now - RETENTION_FLOOR,
            )
        ),
        "intakeq_request_log": delete(IntakeQRequest).where(
            IntakeQRequest.sent_at < now - REQUEST_LOG_KEPT
        ),
        "webhook_events": delete(WebhookEvent).where(
            WebhookEvent.received_at < now - WEBHOOK_EVENTS_KEPT
        ),
        "password_resets": delete(PasswordReset).where(
            PasswordReset.expires_at < now - RESETS_KEPT
        ),
        "nightly_claims": delete(NightlyClaim).where(NightlyClaim.claimed_at < now - CLAIMS_KEPT),
        "worker_heartbeats": delete(WorkerHeartbeat).where(
            WorkerHeartbeat.seen_at < now - HEARTBEATS_KEPT
        ),
    }
    if log_retention_days is not None:
        cutoff = now - timedelta(days=log_retention_days)
        statements["patient_activity_log"] = delete(PatientActivity).where(
            PatientActivity.created_at < min(cutoff, now - RETENTION_FLOOR)
        )
        statements["sync_logs"] = delete(SyncLog).where(
            SyncLog.status != "running", SyncLog.started_at < cutoff
        )
    deleted: dict[str, int] = {}
    with engine.begin() as conn:
        for table, statement in statements.items():
            deleted[table] = conn.execute(statement).rowcount
    return deleted
