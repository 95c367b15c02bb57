"""The sync: pull IntakeQ appointments into our database for one patient, one
organisation, or the whole practice nightly.

- orchestrator: prepares a run and carries it out (the only entry point callers need);
- plan: which queries a run makes and how many pages each may take;
- writer: match, diff and upsert a page;
- deletion: soft deletion, only on proof from IntakeQ;
- audit: the activity log's entries;
- records: the run's record in sync_logs (progress, outcome);
- locks: one run per scope, a lease kept alive while the run lives;
- context, results: what a run carries and what it answers.
"""

from pqsync.services.sync.locks import SyncInProgress
from pqsync.services.sync.orchestrator import SCHEDULE_ACTOR, SyncService
from pqsync.services.sync.results import (
    Actor,
    PreparedRun,
    SyncInputError,
    SyncResult,
)

__all__ = [
    "SCHEDULE_ACTOR",
    "Actor",
    "PreparedRun",
    "SyncInProgress",
    "SyncInputError",
    "SyncResult",
    "SyncService",
]
