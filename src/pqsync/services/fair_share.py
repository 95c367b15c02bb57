"""Fair shares of the day's IntakeQ requests among the people who press Sync.

The day's budget (INTAKEQ_DAILY_LIMIT) is shared by everything that uses the key. Syncs that
people start may not eat into the reserve kept for the nightly run and the weekly verification
(`PQSYNC_NIGHTLY_RESERVE_SHARE`), and each organisation's people may spend at most their
organisation's share a day (`PQSYNC_ORGANIZATION_BUDGET_SHARE`); so one user's loop stops at
its organisation's cap while every other organisation can still sync. Each person may also
start at most `PQSYNC_USER_SYNCS_PER_HOUR` syncs an hour, whichever patients they are for, so
one person's script cannot spend their colleagues' share either.
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
HOUR = timedelta(hours=1)


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
        self,
        engine: Engine,
        *,
        daily_limit: int,
        reserve_share: float,
        organization_share: float,
        user_syncs_per_hour: int | None = None,
    ) -> None:
        self.engine = engine
        self.user_syncs_per_hour = user_syncs_per_hour
        self.daily_limit = daily_limit
        self.reserve = math.floor(daily_limit * reserve_share)
        self.organization_cap = max(1, math.floor(daily_limit * organization_share))
        self.organization_share = organization_share

    def refusal(
        self,
        organization_id: uuid.UUID | None,
        usage: BudgetUsage,
        now: datetime,
        user_id: uuid.UUID | None = None,
    ) -> Refusal | None:
        """None when a person's sync (`user_id`'s, for `organization_id`, None: staff's) may
        start now."""
        if user_id is not None and self.user_syncs_per_hour is not None:
            started, oldest = self._user_syncs(user_id, now)
            if started >= self.user_syncs_per_hour and oldest is not None:
                return Refusal(
                    "user_rate_reached",
                    f"you have started {started} syncs in the last hour, the most one person "
                    f"may ({self.user_syncs_per_hour} syncs an hour)",
                    oldest + HOUR,
                )
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

    def _user_syncs(self, user_id: uuid.UUID, now: datetime) -> tuple[int, datetime | None]:
        """The syncs `user_id` started in the last hour, and when the one that frees a place
        first started."""
        with self.engine.connect() as conn:
            starts = (
                conn.execute(
                    select(SyncLog.started_at)
                    .where(
                        SyncLog.triggered_by_user_id == user_id,
                        SyncLog.triggered_by == "user",
                        SyncLog.started_at > now - HOUR,
                    )
                    .order_by(SyncLog.started_at)
                )
                .scalars()
                .all()
            )
        if self.user_syncs_per_hour is None or len(starts) < self.user_syncs_per_hour:
            return len(starts), None
        # Past the rate, the next place frees when enough of the oldest have aged out.
        return len(starts), starts[len(starts) - self.user_syncs_per_hour]

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
