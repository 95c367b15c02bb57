"""What a sync run takes and returns."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pqsync.domain.windows import Window

HANDED_BACK = (
    "handed back: the worker was stopping (a restart); the run continues on the next worker"
)


class HandedBack(Exception):
    """Raised from a progress callback between pages: the worker is stopping, so the run
    stops at the page boundary (every written page committed) and is queued again."""


class SyncInputError(ValueError):
    """Bad input to a sync (unknown patient or organisation); nothing was written."""


@dataclass(frozen=True)
class Actor:
    """Who caused a run: `cli`, `user` (with id and name), `schedule` or `webhook`."""

    kind: str = "cli"
    user_id: uuid.UUID | None = None
    name: str | None = None


@dataclass
class Summary:
    """What a run (or one patient's part of it) did to appointments."""

    new: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    errors: int = 0

    @classmethod
    def from_mapping(cls, raw: object) -> Summary:
        """A summary stored as JSON (`as_dict`); missing or odd counts read as 0."""
        if not isinstance(raw, Mapping):
            return cls()

        def count(name: str) -> int:
            value = raw.get(name, 0)
            return value if isinstance(value, int) and not isinstance(value, bool) else 0

        return cls(*(count(name) for name in ("new", "updated", "unchanged", "deleted", "errors")))

    @classmethod
    def total(cls, summaries: Iterable[Summary]) -> Summary:
        total = cls()
        for summary in summaries:
            total.add(summary)
        return total

    @property
    def seen(self) -> int:
        return self.new + self.updated + self.unchanged + self.deleted + self.errors

    def add(self, other: Summary) -> None:
        self.new += other.new
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.deleted += other.deleted
        self.errors += other.errors

    def as_dict(self) -> dict[str, int]:
        return {
            "new": self.new,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "deleted": self.deleted,
            "errors": self.errors,
        }


@dataclass
class SyncedAppointment:
    id: uuid.UUID
    pq_appointment_id: str
    start_time: datetime
    provider_name: str | None
    status: str
    action: str  # new | updated | unchanged | deleted


@dataclass
class PatientResult:
    patient_id: uuid.UUID
    patient_name: str
    summary: Summary = field(default_factory=Summary)
    appointments: list[SyncedAppointment] = field(default_factory=list)
    error: str | None = None
    state: str = "pending"  # pending | running | done | failed
    # Why this patient's data may be out of date after the run (empty: complete).
    incomplete: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.state == "done" and not self.incomplete

    error_kind: str | None = None  # as SyncResult.error_kind, when this patient failed


@dataclass(frozen=True)
class PreparedRun:
    """A run that holds its scope's lock and has its sync_logs row; `SyncService.run` it."""

    run_id: uuid.UUID
    scope: str  # patient | organization | nightly
    scope_key: str
    window: Window
    actor: Actor
    started_at: datetime
    timezone: str
    patient_ids: list[uuid.UUID]
    organization_id: uuid.UUID | None = None
    organization_name: str | None = None
    # Set for a run that re-fetches one appointment (a webhook's hint) instead of a window.
    appointment_id: str | None = None
    # A paused run taken up again: its finished patients are not synced twice.
    resumed: bool = False
    # At most how many requests the run was promised to spend (Sync all's estimate).
    request_promise: int | None = None


@dataclass
class SyncResult:
    run_id: uuid.UUID
    scope: str
    status: str  # running | success | partial | failed | paused
    window: Window
    started_at: datetime
    finished_at: datetime
    summary: Summary
    patients: list[PatientResult]
    organization_id: uuid.UUID | None = None
    organization_name: str | None = None
    plan: str | None = None  # window | per_patient | incremental | refetch
    error: str | None = None
    error_kind: str | None = None  # unreachable | budget | auth | intakeq | internal
    budget_frees_at: datetime | None = None
    requests_made: int = 0
    warnings: list[str] = field(default_factory=list)
    unmatched_practitioners: dict[str, int] = field(default_factory=dict)
    unknown_clients: int = 0
    unknown_appointments: list[dict[str, Any]] = field(default_factory=list)
    # The skipped appointments of each unknown IntakeQ client, by ClientId (no names).
    unknown_by_client: dict[str, int] = field(default_factory=dict)
    malformed: int = 0
    # Why the run is `partial`, in words a person can act on (patients' and the run's own).
    incomplete: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in ("success", "partial")
