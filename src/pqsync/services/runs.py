"""Runs looked up by what a page or a caller knows of them (an id, an organisation)."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from pqsync.db.tables import SyncLog


def run_by_id(session: Session, run_id: uuid.UUID | None) -> SyncLog | None:
    """The run's record, if there is one."""
    return None if run_id is None else session.get(SyncLog, run_id)


def running_sync_all(session: Session, organization_id: uuid.UUID) -> uuid.UUID | None:
    """The organisation's Sync all still going, if any (the page rejoins it)."""
    return session.scalar(
        select(SyncLog.id)
        .where(
            SyncLog.sync_type == "organization",
            SyncLog.organization_id == organization_id,
            SyncLog.status == "running",
        )
        .order_by(SyncLog.started_at.desc())
        .limit(1)
    )
