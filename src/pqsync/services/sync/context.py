"""What one run carries from page to page: who runs it, its clocks, lookups and results."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from pqsync.db.tables import Provider, ProviderIntakeQSettings, Service
from pqsync.domain.matching import PatientMatcher
from pqsync.services.sync.locks import LeaseKeeper
from pqsync.services.sync.results import Actor, PatientResult, SyncResult

# The most appointments (or warnings) one run lists in its log.
MAX_LISTED = 200


@dataclass
class Lookups:
    """Id maps loaded once per run."""

    providers_by_practitioner: dict[str, uuid.UUID]
    provider_names: dict[uuid.UUID, str]
    services_by_intakeq: dict[str, uuid.UUID]

    @classmethod
    def load(cls, session: Session) -> Lookups:
        mapped = session.execute(
            select(ProviderIntakeQSettings.intakeq_practitioner_id, Provider.id).join(
                Provider, Provider.id == ProviderIntakeQSettings.provider_id
            )
        ).all()
        names = session.execute(select(Provider.id, Provider.name)).all()
        services = session.execute(select(Service.intakeq_service_id, Service.id)).all()
        return cls(
            providers_by_practitioner=dict(mapped),
            provider_names=dict(names),
            services_by_intakeq=dict(services),
        )

    def provider_name(self, practitioner_id: str | None) -> str | None:
        provider_id = self.providers_by_practitioner.get(practitioner_id or "")
        return self.provider_names.get(provider_id) if provider_id else None


@dataclass
class RunContext:
    """One run's state. `practice_zone` decides every date sent to IntakeQ and every window
    judgement; `display_zone` (the organisation's) only how times read in the audit log."""

    run_id: uuid.UUID
    actor: Actor
    started_at: datetime
    practice_zone: ZoneInfo
    display_zone: ZoneInfo
    lookups: Lookups
    matcher: PatientMatcher
    results: dict[uuid.UUID, PatientResult]
    result: SyncResult
    lease: LeaseKeeper
    # Every Id IntakeQ returned in this run, matched or not: absence means only what it says.
    fetched_ids: set[str] = field(default_factory=set)
    # A malformed record without an Id makes absence unprovable for this run.
    unidentified_malformed: bool = False
    # Per-appointment outcomes are kept only where someone reads them (a patient's run).
    keep_appointments: bool = True
    # The window plan's pages: fetched so far, and about how many there are (progress only).
    pages_done: int = 0
    pages_about: int | None = None

    def check_lease(self, conn: Connection) -> None:
        """Refuse to write (LeaseLost) unless the run still holds its scope."""
        self.lease.check(conn)

    def warn(self, message: str) -> None:
        if len(self.result.warnings) < MAX_LISTED:
            self.result.warnings.append(message)
