"""The sync: pull IntakeQ appointments into our database for one patient, one
organisation, or the whole practice nightly.

- orchestrator: prepares a run, picks its plan and records the outcome (the only entry
  point callers need);
- strategies: the plans (window, per patient, incremental, refetch), each run the same way;
- plan: what each plan costs, and how many pages a query may take;
- identity: which of our patients an IntakeQ record belongs to;
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
