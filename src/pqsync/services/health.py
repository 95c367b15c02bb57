"""What monitoring reads: workers last seen, each organisation's last good sync, run counts,
the day's IntakeQ requests. Organisation names and counts only, never a patient."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, func, or_, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from pqsync.db.tables import IntakeQRequest, Organization, SyncLock, SyncLog, WorkerHeartbeat
from pqsync.services.sync.locks import PREPARED_HOLD

GOOD = ("success", "partial")
# A worker finishes a tick every minute; one not seen for this long is gone or its tick fails.
WORKER_SEEN_WITHIN = timedelta(minutes=2)
DAY = timedelta(days=1)


@dataclass(frozen=True)
class OrganizationHealth:
    id: uuid.UUID
    slug: str
    last_success_at: datetime | None


def worker_last_seen(engine: Engine) -> datetime | None:
    with engine.connect() as conn:
        return conn.scalar(select(func.max(WorkerHeartbeat.seen_at)))


def worker_alive(engine: Engine, now: datetime) -> bool:
    seen = worker_last_seen(engine)
    return seen is not None and now - seen <= WORKER_SEEN_WITHIN


WAITING_FOR_WORKER = (
    "waiting for a worker: no pqsync worker is running; the sync starts when one does"
)


def waiting_for(engine: Engine, now: datetime, run_id: uuid.UUID, status: str) -> str | None:
    """Why a running run has not moved: no worker has taken it up, and none is running."""
    if status != "running" or worker_alive(engine, now):
        return None
    with engine.connect() as conn:
        lease = conn.execute(
            select(SyncLock.acquired_at, SyncLock.expires_at).where(SyncLock.run_id == run_id)
        ).first()
    # A lease still as long as the queue's hold has not been renewed by a worker's run.
    if lease is None or lease.expires_at - lease.acquired_at < PREPARED_HOLD - timedelta(seconds=1):
        return None
    return WAITING_FOR_WORKER


def organizations_last_success(engine: Engine) -> list[OrganizationHealth]:
    """Each organisation's last successful organisation or nightly run."""
    with engine.connect() as conn:
        nightly = conn.scalar(
            select(func.max(SyncLog.finished_at)).where(
                SyncLog.sync_type == "nightly", SyncLog.status.in_(GOOD)
            )
        )
        own = dict(
            conn.execute(
                select(SyncLog.organization_id, func.max(SyncLog.finished_at))
                .where(SyncLog.sync_type == "organization", SyncLog.status.in_(GOOD))
                .group_by(SyncLog.organization_id)
            ).all()
        )
        orgs = conn.execute(select(Organization.id, Organization.slug).order_by(Organization.slug))
        found = []
        for org_id, slug in orgs:
            times = [t for t in (own.get(org_id), nightly) if t is not None]
            found.append(OrganizationHealth(org_id, slug, max(times) if times else None))
        return found


def last_nightly_success(engine: Engine) -> datetime | None:
    with engine.connect() as conn:
        return conn.scalar(
            select(func.max(SyncLog.finished_at)).where(
                or_(SyncLog.sync_type == "nightly", SyncLog.run_type == "automated_daily"),
                SyncLog.status.in_(GOOD),
            )
        )


def runs_by_type_and_outcome(engine: Engine) -> dict[tuple[str, str], int]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(SyncLog.run_type, SyncLog.status, func.count()).group_by(
                SyncLog.run_type, SyncLog.status
            )
        )
        return {(run_type or "unknown", status): count for run_type, status, count in rows}


def requests_in_last_day(engine: Engine, fingerprint: str, now: datetime) -> int:
    """IntakeQ requests sent with this key in the budget's 24-hour window."""
    with engine.connect() as conn:
        return int(
            conn.scalar(
                select(func.count()).where(
                    IntakeQRequest.key_fingerprint == fingerprint,
                    IntakeQRequest.sent_at > now - DAY,
                )
            )
            or 0
        )


def database_answers(session: Session) -> bool:
    """Whether the database answers a trivial query."""
    try:
        session.execute(text("select 1"))
    except SQLAlchemyError:
        return False
    return True
