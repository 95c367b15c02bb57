"""One running sync per scope, across processes and machines.

A row in `sync_locks` is a lease. While a run lives, a `LeaseKeeper` thread renews it by
time (a third of the lease at a time), so long waits (429s, slow pages) never let it lapse.
A worker that dies stops renewing; once the lease has expired the next caller takes the
scope over with a conditional UPDATE whose row count says who won, and the dead run's
`sync_logs` row is closed as failed ("worker stopped"). Every write transaction of a run
first checks, inside that transaction and locking the lock row, that the run still holds its
scope (`SyncLocks.holds`): a run that lost its lease writes nothing more, and no takeover
lands between the check and the commit.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from types import TracebackType

from sqlalchemy import Connection, Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from pqsync.db.tables import SyncLock, SyncLog
from pqsync.logging import get_logger

DEFAULT_LEASE = timedelta(seconds=30)
# How long a prepared run may wait (in the queue) for its worker to start it: the lease is
# this long until the run starts, then `DEFAULT_LEASE` renewed while it lives.
PREPARED_HOLD = timedelta(minutes=10)
WORKER_STOPPED = "worker stopped"

log = get_logger("pqsync.locks")


class SyncInProgress(Exception):
    """A run of this scope is already going; `run_id` names it."""

    def __init__(self, scope: str, run_id: uuid.UUID) -> None:
        self.scope = scope
        self.run_id = run_id
        super().__init__(f"a sync of {scope} is already running (run {run_id})")


class LeaseLost(Exception):
    """The run no longer holds its scope: another worker took it over after it lapsed."""

    def __init__(self) -> None:
        super().__init__(
            "the run lost its lease (another worker took the scope over); it stopped writing"
        )


def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class SyncLocks:
    def __init__(
        self,
        engine: Engine,
        clock: Callable[[], datetime],
        *,
        lease: timedelta = DEFAULT_LEASE,
        holder: str | None = None,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.lease = lease
        self.holder = holder or default_holder()

    def acquire(
        self,
        scope_key: str,
        run_id: uuid.UUID,
        label: str | None = None,
        *,
        hold: timedelta | None = None,
    ) -> None:
        """Take the scope for `run_id` for `hold` (the lease by default), or raise
        SyncInProgress naming the running run.

        An expired lease is taken over, and the run that held it is closed as failed."""
        now = self.clock()
        values = {
            "scope_key": scope_key,
            "run_id": run_id,
            "holder": self.holder,
            "acquired_at": now,
            "expires_at": now + (hold or self.lease),
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(SyncLock).values(**values))
            return
        except IntegrityError:
            pass
        with self.engine.begin() as conn:
            stale = conn.scalar(
                select(SyncLock.run_id).where(
                    SyncLock.scope_key == scope_key, SyncLock.expires_at < now
                )
            )
            taken = conn.execute(
                update(SyncLock)
                .where(SyncLock.scope_key == scope_key, SyncLock.expires_at < now)
                .values(**values)
            )
            if taken.rowcount == 1:
                if stale is not None:
                    _close_stopped(conn, [stale], now)
                return
            running = conn.scalar(select(SyncLock.run_id).where(SyncLock.scope_key == scope_key))
        if running is None:  # released between our two statements: try once more
            return self.acquire(scope_key, run_id, label, hold=hold)
        raise SyncInProgress(label or scope_key, running)

    def renew(self, scope_key: str, run_id: uuid.UUID) -> bool:
        """Extend the lease; False when the run no longer holds the scope."""
        with self.engine.begin() as conn:
            renewed = conn.execute(
                update(SyncLock)
                .where(SyncLock.scope_key == scope_key, SyncLock.run_id == run_id)
                .values(expires_at=self.clock() + self.lease)
            )
        return renewed.rowcount == 1

    @staticmethod
    def holds(conn: Connection, scope_key: str, run_id: uuid.UUID, *, lock: bool = True) -> bool:
        """Whether `run_id` still holds the scope, read inside the caller's transaction.

        The lock row is locked (`SELECT ... FOR UPDATE` on PostgreSQL; SQLite's write
        transaction already excludes every other writer) until that transaction ends, so
        no other worker can take the scope over between this check and the commit."""
        statement = select(SyncLock.run_id).where(
            SyncLock.scope_key == scope_key, SyncLock.run_id == run_id
        )
        held = conn.scalar(statement.with_for_update() if lock else statement)
        return held is not None

    def still_holds(self, scope_key: str, run_id: uuid.UUID) -> bool:
        """Whether `run_id` still holds its scope and is still `running` (a queued run that
        waited past its hold has been closed, and its scope may be another's)."""
        with self.engine.connect() as conn:
            status = conn.scalar(select(SyncLog.status).where(SyncLog.id == run_id))
            return status == "running" and self.holds(conn, scope_key, run_id, lock=False)

    def release(self, scope_key: str, run_id: uuid.UUID) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                delete(SyncLock).where(SyncLock.scope_key == scope_key, SyncLock.run_id == run_id)
            )

    def keep(self, scope_key: str, run_id: uuid.UUID) -> LeaseKeeper:
        """A thread that renews the lease until the `with` block ends (see LeaseKeeper)."""
        return LeaseKeeper(self, scope_key, run_id)

    def reap_expired(self) -> list[uuid.UUID]:
        """Close the runs whose worker died: expired leases are freed and their runs, and
        runs still `running` with no lease at all (older than one lease), marked failed."""
        now = self.clock()
        with self.engine.begin() as conn:
            expired = list(conn.scalars(select(SyncLock.run_id).where(SyncLock.expires_at < now)))
            if expired:
                conn.execute(delete(SyncLock).where(SyncLock.expires_at < now))
            held = select(SyncLock.run_id)
            orphaned = list(
                conn.scalars(
                    select(SyncLog.id).where(
                        SyncLog.status == "running",
                        SyncLog.started_at < now - self.lease,
                        SyncLog.id.not_in(held),
                    )
                )
            )
            closed = _close_stopped(conn, [*expired, *orphaned], now)
        return closed


def _close_stopped(conn: Connection, run_ids: list[uuid.UUID], now: datetime) -> list[uuid.UUID]:
    """Mark these runs failed ("worker stopped") if they are still `running`."""
    if not run_ids:
        return []
    closed = list(
        conn.scalars(select(SyncLog.id).where(SyncLog.id.in_(run_ids), SyncLog.status == "running"))
    )
    for run_id in closed:
        details = conn.scalar(select(SyncLog.details).where(SyncLog.id == run_id)) or {}
        conn.execute(
            update(SyncLog)
            .where(SyncLog.id == run_id, SyncLog.status == "running")
            .values(
                status="failed",
                finished_at=now,
                error_message=WORKER_STOPPED,
                details={**details, "error_kind": "worker_stopped"},
            )
        )
        log.warning("sync.worker_stopped", run_id=str(run_id))
    return closed


class LeaseKeeper:
    """Renews a run's lease every third of it, on a thread of its own, while the run lives
    (also while the run waits out a 429 or a slow answer). When a renewal finds the scope
    taken over, `lost` is set; the run's next write transaction refuses to write."""

    def __init__(self, locks: SyncLocks, scope_key: str, run_id: uuid.UUID) -> None:
        self._locks = locks
        self._scope_key = scope_key
        self._run_id = run_id
        self._stop = threading.Event()
        self.lost = False
        self._thread = threading.Thread(target=self._renew, name="pqsync-lease", daemon=True)

    def _renew(self) -> None:
        interval = self._locks.lease.total_seconds() / 3
        while not self._stop.wait(interval):
            try:
                if not self._locks.renew(self._scope_key, self._run_id):
                    self.lost = True
                    log.warning("sync.lease_lost", run_id=str(self._run_id))
                    return
            except SQLAlchemyError as exc:  # a busy database: the next renewal tries again
                log.warning("sync.lease_renewal_failed", error=type(exc).__name__)

    def check(self, conn: Connection) -> None:
        """Raise LeaseLost unless the run still holds its scope (inside `conn`'s transaction)."""
        if self.lost or not SyncLocks.holds(conn, self._scope_key, self._run_id):
            self.lost = True
            raise LeaseLost()

    def __enter__(self) -> LeaseKeeper:
        # From the prepared run's longer hold to the run's own lease, at once: a process
        # that dies from now on frees the scope within one lease.
        self.lost = not self._locks.renew(self._scope_key, self._run_id)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
