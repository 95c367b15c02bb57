"""What one run carries from page to page: who runs it, its clocks, lookups and results."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from pqsync.db.tables import Provider, ProviderIntakeQSettings, Service
from pqsync.services.sync.identity import Identities
from pqsync.services.sync.locks import LeaseKeeper
from pqsync.services.sync.results import Actor, PatientResult, SyncResult

# The most appointments (or warnings) one run lists in its log.
MAX_LISTED = 200
# The requests of the check that IntakeQ did not change while a run read it page by page
# (see consistency.py): one `updatedSince` and one `deletedOnly` listing, a page each.
CHECK_REQUESTS = 2


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
    identity: Identities
    results: dict[uuid.UUID, PatientResult]
    result: SyncResult
    lease: LeaseKeeper
    # Every Id IntakeQ returned in this run, matched or not: absence means only what it says.
    fetched_ids: set[str] = field(default_factory=set)
    # The versions (models.version: every field, LastModified or not) of each appointment
    # listings returned in this run, and whether one of its listings took more than one page
    # (see consistency.py).
    seen_versions: dict[str, set[int]] = field(default_factory=dict)
    paged: bool = False
    # The appointments IntakeQ said were deleted (its `deletedOnly` list, 404s) when read.
    known_deleted: set[str] = field(default_factory=set)
    # A malformed record without an Id makes absence unprovable for this run.
    unidentified_malformed: bool = False
    # Per-appointment outcomes are kept only where someone reads them (a patient's run).
    keep_appointments: bool = True
    # Re-checks by id this run may still spend (one request each), over all its patients.
    rechecks_left: int = 0
    # The requests the run promised not to exceed (None: no promise), and those sent so far.
    request_promise: int | None = None
    requests_spent: Callable[[], int] = lambda: 0

    def requests_left(self) -> int | None:
        """Requests the run may still send within what it promised (None: no promise),
        keeping back what its questions about ClientIds may still cost."""
        if self.request_promise is None:
            return None
        reserved = self.identity.requests_reserved()
        # A run that paged keeps its consistency check's requests (see consistency.py).
        if self.paged:
            reserved += CHECK_REQUESTS
        return self.request_promise - self.requests_spent() - reserved

    def may_request(self, count: int = 1) -> bool:
        """Whether `count` more requests keep the run inside its promise."""
        left = self.requests_left()
        return left is None or left >= count

    def rechecks_allowed(self) -> int:
        """Re-checks the run may still send: its own limit, within what it promised."""
        allowed = self.rechecks_left
        left = self.requests_left()
        if left is not None:
            allowed = min(allowed, left)
        return max(0, allowed)

    # Whether the run fetched the whole window completely (a reconcile).
    window_fetched: bool = False
    # Whether a listing stopped at the requests the run promised (already partial: what
    # changed meanwhile is moot until the next run reads the rest).
    read_cut_short: bool = False
    # Whether an incremental nightly fetched every day new to its window since the window
    # last covered completely (its whole window is then as complete as a reconcile left it).
    new_days_fetched: bool = False
    # Why the run as a whole is incomplete (every patient's data may be out of date).
    incomplete_reasons: list[str] = field(default_factory=list)

    def incomplete(self, patient_id: uuid.UUID | None, reason: str) -> None:
        """Record that a patient's data (None: everyone's in the run) may be out of date:
        the run ends `partial` and does not stamp them as synced."""
        if patient_id is None:
            if reason not in self.incomplete_reasons:
                self.incomplete_reasons.append(reason)
            return
        result = self.results.get(patient_id)
        if result is not None and reason not in result.incomplete:
            result.incomplete.append(reason)

    # The window plan's pages: fetched so far, and about how many there are (progress only).
    pages_done: int = 0
    pages_about: int | None = None

    def check_lease(self, conn: Connection) -> None:
        """Refuse to write (LeaseLost) unless the run still holds its scope."""
        self.lease.check(conn)

    def warn(self, message: str) -> None:
        if len(self.result.warnings) < MAX_LISTED:
            self.result.warnings.append(message)
