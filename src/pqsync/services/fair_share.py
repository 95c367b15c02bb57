"""Fair shares of the day's IntakeQ requests among the people who press Sync.

The day's budget (INTAKEQ_DAILY_LIMIT) is shared by everything that uses the key. Syncs that
people start may not eat into the reserve kept for the nightly run and the weekly verification
(`PQSYNC_NIGHTLY_RESERVE_SHARE`), and each organisation's people may spend at most their
organisation's share a day (`PQSYNC_ORGANIZATION_BUDGET_SHARE`); so one user's loop stops at
its organisation's cap while every other organisation can still sync.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, func, select

from pqsync.db.tables import Organization, SyncLog
from pqsync.intakeq.budget import BudgetUsage

DAY = timedelta(days=1)


@dataclass(frozen=True)
class Refusal:
    """Why a person's sync may not start now, and when they may sync again."""

    code: str
    message: str
    retry_at: datetime


@dataclass(frozen=True)
class OrganizationUse:
    name: str
    used: int
    cap: int


class FairShare:
    def __init__(
        self, engine: Engine, *, daily_limit: int, reserve_share: float, organization_share: float
    ) -> None:
        self.engine = engine
        self.daily_limit = daily_limit
        self.reserve = math.floor(daily_limit * reserve_share)
        self.organization_cap = max(1, math.floor(daily_limit * organization_share))
        self.organization_share = organization_share

    def refusal(
        self, organization_id: uuid.UUID | None, usage: BudgetUsage, now: datetime
    ) -> Refusal | None:
        """None when a person's sync (for `organization_id`, None: staff's) may start now."""
        if self.reserve and usage.day_used >= self.daily_limit - self.reserve:
            return Refusal(
                "intakeq_reserve_reached",
                "the rest of today's IntakeQ requests is kept for the nightly sync; "
                "you may sync again when requests free up",
                usage.day_frees_at or now + DAY,
            )
        if organization_id is None or self.organization_share >= 1:
            return None
        used, oldest = self._organization_use(organization_id, now)
        if used >= self.organization_cap and oldest is not None:
            return Refusal(
                "organization_share_used",
                f"your organisation's share of today's IntakeQ requests ({self.organization_cap}) "
                "is used up",
                oldest + DAY,
            )
        return None

    def _organization_use(
        self, organization_id: uuid.UUID, now: datetime
    ) -> tuple[int, datetime | None]:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(func.sum(SyncLog.requests_made), func.min(SyncLog.started_at)).where(
                    SyncLog.organization_id == organization_id,
                    SyncLog.triggered_by == "user",
                    SyncLog.started_at > now - DAY,
                    SyncLog.requests_made > 0,
                )
            ).one()
        return int(row[0] or 0), row[1]

    def by_organization(self, now: datetime) -> list[OrganizationUse]:
        """Each organisation's people's requests in the last 24 hours, against their cap."""
        with self.engine.connect() as conn:
            used = dict(
                conn.execute(
                    select(SyncLog.organization_id, func.sum(SyncLog.requests_made))
                    .where(SyncLog.triggered_by == "user", SyncLog.started_at > now - DAY)
                    .group_by(SyncLog.organization_id)
                ).all()
            )
            orgs = conn.execute(
                select(Organization.id, Organization.name).order_by(Organization.name)
            )
            return [
                OrganizationUse(name, int(used.get(org_id) or 0), self.organization_cap)
                for org_id, name in orgs
            ]
