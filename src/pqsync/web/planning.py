"""What Sync all tells before it starts: how many patients, the date range, how long it
may take and what it costs of today's IntakeQ request budget."""

from __future__ import annotations

import math
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from pqsync.db.tables import Affiliation, Organization
from pqsync.domain.windows import default_window
from pqsync.intakeq.budget import BudgetUsage
from pqsync.services.sync.plan import Planner
from pqsync.web.context import WebContext


@dataclass(frozen=True)
class SyncAllPlan:
    patients: int
    start: str
    end: str
    requests: int
    minutes: int
    left_today: int
    daily_limit: int

    @property
    def fits_budget(self) -> bool:
        return self.requests <= self.left_today


def budget_usage(ctx: WebContext, session: Session) -> BudgetUsage:
    """The IntakeQ budget's use; the page's session hands its connection back first, so a
    request never holds two (under load that would drain the pool)."""
    session.commit()
    return ctx.app.budget_usage()


def sync_all_plan(ctx: WebContext, session: Session, org: Organization) -> SyncAllPlan:
    """What the Sync all dialog tells before starting: the default window, and at most how
    many requests the run's plan takes (the sync's own planner: the whole window or one
    query per patient, whichever is cheaper), paced by the minute limit, against the budget
    left today."""
    patient_ids = list(
        session.scalars(select(Affiliation.patient_id).where(Affiliation.organization_id == org.id))
    )
    settings = ctx.app.settings
    planner = Planner(ctx.now, ZoneInfo(settings.practice_timezone))
    window = default_window(
        ctx.now(), ZoneInfo(settings.practice_timezone), org.window_days_back, org.window_days_ahead
    )
    requests = planner.organization_requests(session, patient_ids, window) if patient_ids else 0
    usage = budget_usage(ctx, session)
    per_minute = max(1, settings.intakeq_minute_limit)
    windows = math.ceil(requests / per_minute)
    minutes = max(1, math.ceil(windows * settings.intakeq_minute_window_seconds / 60))
    return SyncAllPlan(
        patients=len(patient_ids),
        start=window.start.isoformat(),
        end=window.end.isoformat(),
        requests=requests,
        minutes=minutes,
        left_today=max(0, usage.daily_limit - usage.day_used),
        daily_limit=usage.daily_limit,
    )
