"""What Sync all tells before it starts: how many patients, the date range, how long it
may take and what it costs of today's IntakeQ request budget."""

from __future__ import annotations

import math
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pqsync.db.tables import Affiliation, Organization
from pqsync.domain.windows import default_window
from pqsync.intakeq.budget import BudgetUsage
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
    """What the Sync all dialog tells before starting: the default window, and the worst
    case of the plan (one request per patient; fetching the whole window costs less when
    the practice is small), paced by the minute limit, against the budget left today."""
    patients = (
        session.scalar(
            select(func.count())
            .select_from(Affiliation)
            .where(Affiliation.organization_id == org.id)
        )
        or 0
    )
    window = default_window(
        ctx.now(), ZoneInfo(org.timezone), org.window_days_back, org.window_days_ahead
    )
    settings = ctx.app.settings
    usage = budget_usage(ctx, session)
    per_minute = max(1, settings.intakeq_minute_limit)
    minutes = max(1, math.ceil(patients / per_minute * settings.intakeq_minute_window_seconds / 60))
    return SyncAllPlan(
        patients=patients,
        start=window.start.isoformat(),
        end=window.end.isoformat(),
        requests=patients,
        minutes=minutes,
        left_today=max(0, usage.daily_limit - usage.day_used),
        daily_limit=usage.daily_limit,
    )
