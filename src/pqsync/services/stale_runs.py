"""Runs whose worker died: their sync_logs row says `running` but no live lease holds them."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Engine, delete, select, update

from pqsync.db.tables import SyncLock, SyncLog
from pqsync.logging import get_logger

WORKER_STOPPED = "worker stopped"

log = get_logger("pqsync.stale_runs")


def close_stale_runs(engine: Engine, now: datetime) -> list[uuid.UUID]:
    """Mark every `running` run whose lease in `sync_locks` is gone or expired as failed
    ("worker stopped"), free those leases, and return the runs closed."""
    with engine.begin() as conn:
        live = select(SyncLock.run_id).where(SyncLock.expires_at >= now)
        stale = list(
            conn.scalars(
                select(SyncLog.id).where(SyncLog.status == "running", SyncLog.id.not_in(live))
            )
        )
        conn.execute(delete(SyncLock).where(SyncLock.expires_at < now))
        closed: list[uuid.UUID] = []
        for run_id in stale:
            details = conn.scalar(select(SyncLog.details).where(SyncLog.id == run_id)) or {}
            done = conn.execute(
                update(SyncLog)
                .where(SyncLog.id == run_id, SyncLog.status == "running")
                .values(
                    status="failed",
                    finished_at=now,
                    error_message=WORKER_STOPPED,
                    details={**details, "error_kind": "worker_stopped"},
                )
            )
            if done.rowcount == 1:
                closed.append(run_id)
    for run_id in closed:
        log.warning("sync.worker_stopped", run_id=str(run_id))
    return closed


def holds_its_lease(engine: Engine, scope_key: str, run_id: uuid.UUID) -> bool:
    """Whether `run_id` still holds its scope and is still `running` (a queued run that waited
    past its lease may have been closed, and its scope taken by another)."""
    with engine.connect() as conn:
        holder = conn.scalar(select(SyncLock.run_id).where(SyncLock.scope_key == scope_key))
        status = conn.scalar(select(SyncLog.status).where(SyncLog.id == run_id))
    return holder == run_id and status == "running"
