"""What Sync all tells before it starts: how many patients, the date range, how long it
may take and what it costs of today's IntakeQ request budget."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from pqsync.db.tables import Affiliation, Organization
from pqsync.domain.windows import Window
from pqsync.intakeq.budget import BudgetUsage
from pqsync.services.sync import SyncService


@dataclass(frozen=True)
class SyncAllPlan:
    patients: int
    start: str
    end: str
    requests: int
    minutes: int
    left_today: int
    daily_limit: int


def sync_all_plan(
    sync: SyncService,
    session: Session,
    org: Organization,
    usage: BudgetUsage,
    *,
    minute_limit: int,
    minute_window_seconds: float,
    window: Window | None = None,
) -> SyncAllPlan:
    """What the Sync all dialog tells before starting: the run's window (the organisation's
    default unless given), and at most how many requests the run's plan takes (the sync's
    own planner: the whole window or one query per patient, whichever is cheaper), paced by
    the minute limit, against the budget left today."""
    patient_ids = list(
        session.scalars(select(Affiliation.patient_id).where(Affiliation.organization_id == org.id))
    )
    window = window or sync.organization_window(org)
    requests = sync.organization_requests(session, patient_ids, window) if patient_ids else 0
    windows = math.ceil(requests / max(1, minute_limit))
    minutes = max(1, math.ceil(windows * minute_window_seconds / 60))
    return SyncAllPlan(
        patients=len(patient_ids),
        start=window.start.isoformat(),
        end=window.end.isoformat(),
        requests=requests,
        minutes=minutes,
        left_today=max(0, usage.daily_limit - usage.day_used),
        daily_limit=usage.daily_limit,
    )
