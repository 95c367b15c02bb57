"""The nightly schedule: each organisation's 03:00 in its own zone, claimed once per local
day in the database however many workers tick."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from pqsync.db.tables import NightlyClaim, Organization, SyncLog
from pqsync.domain.schedule import MISSED_AFTER, NIGHTLY_AT, latest_due_day, local_instant


@dataclass(frozen=True)
class Claim:
    organization_id: uuid.UUID
    local_day: date


@dataclass(frozen=True)
class Missed:
    organization_id: uuid.UUID
    organization_name: str
    local_day: date


class NightlySchedule:
    """Claims due nightly runs: an INSERT keyed by (organisation, local day) that only one
    caller can win; a night missed while no worker ran is claimed when one comes back."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime], worker: str) -> None:
        self.engine = engine
        self.clock = clock
        self.worker = worker

    def _due(self, now: datetime) -> list[tuple[uuid.UUID, str, ZoneInfo, date]]:
        """Each organisation with its zone and the latest local day whose 03:00 has come."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(Organization.id, Organization.name, Organization.timezone).order_by(
                    Organization.slug
                )
            ).all()
        due = []
        for org_id, name, zone_name in rows:
            zone = ZoneInfo(zone_name)
            due.append((org_id, name, zone, latest_due_day(now, zone, NIGHTLY_AT)))
        return due

    def claim_due(self) -> list[Claim]:
        """Claim every organisation whose latest 03:00 has come and is not claimed yet."""
        now = self.clock()
        claims: list[Claim] = []
        for org_id, _name, zone, day in self._due(now):
            try:
                with self.engine.begin() as conn:
                    conn.execute(
                        insert(NightlyClaim).values(
                            organization_id=org_id,
                            local_day=day,
                            due_at=local_instant(day, NIGHTLY_AT, zone),
                            claimed_at=now,
                            worker=self.worker,
                        )
                    )
            except IntegrityError:
                continue  # another worker (or an earlier tick) has it
            claims.append(Claim(org_id, day))
        return claims

    def attach(self, claims: list[Claim], run_id: uuid.UUID) -> None:
        """Record the run that carries out these claims."""
        with self.engine.begin() as conn:
            for claim in claims:
                conn.execute(
                    update(NightlyClaim)
                    .where(
                        NightlyClaim.organization_id == claim.organization_id,
                        NightlyClaim.local_day == claim.local_day,
                    )
                    .values(run_id=run_id)
                )

    def release(self, claims: list[Claim]) -> None:
        """Give claims back (their run could not start); the next tick claims them again."""
        with self.engine.begin() as conn:
            for claim in claims:
                conn.execute(
                    delete(NightlyClaim).where(
                        NightlyClaim.organization_id == claim.organization_id,
                        NightlyClaim.local_day == claim.local_day,
                    )
                )

    def todays_run(self) -> uuid.UUID | None:
        """The run that carries out the latest claimed night of any organisation."""
        now = self.clock()
        days = {org_id: day for org_id, _name, _zone, day in self._due(now)}
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(NightlyClaim.organization_id, NightlyClaim.local_day, NightlyClaim.run_id)
                .where(NightlyClaim.run_id.is_not(None))
                .order_by(NightlyClaim.claimed_at.desc())
            )
            for org_id, day, run_id in rows:
                if days.get(org_id) == day:
                    return uuid.UUID(str(run_id))
        return None

    def retry_failed(self, max_tries: int) -> list[Claim]:
        """Give back today's claims whose nightly run failed (a killed worker, IntakeQ down),
        so this tick claims and runs the night again; at most `max_tries` runs a night."""
        now = self.clock()
        released: list[Claim] = []
        for org_id, _name, _zone, day in self._due(now):
            with self.engine.connect() as conn:
                claim = conn.execute(
                    select(NightlyClaim.run_id, NightlyClaim.due_at).where(
                        NightlyClaim.organization_id == org_id, NightlyClaim.local_day == day
                    )
                ).first()
                if claim is None or claim.run_id is None:
                    continue
                status = conn.scalar(select(SyncLog.status).where(SyncLog.id == claim.run_id))
                if status != "failed":
                    continue
                tries = conn.scalar(
                    select(func.count()).where(
                        SyncLog.sync_type == "nightly", SyncLog.started_at >= claim.due_at
                    )
                )
            if (tries or 0) < max_tries:
                released.append(Claim(org_id, day))
        if released:
            self.release(released)
        return released

    def missed(self) -> list[Missed]:
        """Organisations whose latest nightly run had not started by 06:00 local; only nights
        due since the organisation was set up (a fresh install has missed nothing)."""
        now = self.clock()
        with self.engine.connect() as conn:
            since = dict(conn.execute(select(Organization.id, Organization.created_at)).all())
        missed: list[Missed] = []
        for org_id, name, zone, day in self._due(now):
            if now < local_instant(day, MISSED_AFTER, zone):
                continue
            created = since.get(org_id)
            if created is not None and local_instant(day, NIGHTLY_AT, zone) < created:
                continue
            with self.engine.connect() as conn:
                claimed = conn.scalar(
                    select(NightlyClaim.claimed_at).where(
                        NightlyClaim.organization_id == org_id, NightlyClaim.local_day == day
                    )
                )
            if claimed is None or claimed >= local_instant(day, MISSED_AFTER, zone):
                missed.append(Missed(org_id, name, day))
        return missed
