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

from sqlalchemy import Connection, Engine, and_, delete, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from pqsync.db.engine import write_connection
from pqsync.db.tables import SyncLock, SyncLog
from pqsync.logging import get_logger

DEFAULT_LEASE = timedelta(seconds=30)
# How long a prepared run may wait (in the queue) for its worker to start it: the lease is
# this long until the run starts, then `DEFAULT_LEASE` renewed while it lives.
PREPARED_HOLD = timedelta(minutes=10)
WORKER_STOPPED = "worker stopped"
NO_WORKER = "no worker took the run: it waited in the queue until its hold ran out"

log = get_logger("pqsync.locks")


class SyncInProgress(Exception):
    """A run of this scope is already going; `run_id` names it."""

    def __init__(self, scope: str, run_id: uuid.UUID, paused_until: datetime | None = None) -> None:
        self.scope = scope
        self.run_id = run_id
        # Set when that run is paused (the day's requests are spent): when it resumes.
        self.paused_until = paused_until
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
        # Reads then writes: the write lock is taken up front (BEGIN IMMEDIATE on SQLite), or a
        # snapshot older than another's write fails at once with "database is locked".
        with write_connection(self.engine) as conn, conn.begin():
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
            paused_until = _paused_until(conn, running) if running is not None else None
        if running is None:  # released between our two statements: try once more
            return self.acquire(scope_key, run_id, label, hold=hold)
        raise SyncInProgress(label or scope_key, running, paused_until)

    def hold_until(self, scope_key: str, run_id: uuid.UUID, until: datetime) -> None:
        """Keep a paused run's scope until it resumes (a new run of it would only pause)."""
        with self.engine.begin() as conn:
            conn.execute(
                update(SyncLock)
                .where(SyncLock.scope_key == scope_key, SyncLock.run_id == run_id)
                .values(expires_at=until)
            )

    def resume(self, scope_key: str, run_id: uuid.UUID) -> None:
        """Take the scope back for a paused run (its hold may have lapsed), or raise
        SyncInProgress when another run has it."""
        now = self.clock()
        with write_connection(self.engine) as conn, conn.begin():
            taken = conn.execute(
                update(SyncLock)
                .where(SyncLock.scope_key == scope_key, SyncLock.run_id == run_id)
                .values(holder=self.holder, expires_at=now + PREPARED_HOLD)
            )
        if taken.rowcount != 1:
            self.acquire(scope_key, run_id, hold=PREPARED_HOLD)

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
        held = select(SyncLock.run_id)
        lapsed = SyncLock.expires_at < now
        orphan = and_(
            SyncLog.status == "running",
            SyncLog.started_at < now - self.lease,
            SyncLog.id.not_in(held),
        )
        with self.engine.connect() as conn:  # most calls find nothing: no write lock for them
            if (
                conn.scalar(select(SyncLock.run_id).where(lapsed).limit(1)) is None
                and conn.scalar(select(SyncLog.id).where(orphan).limit(1)) is None
            ):
                return []
        with write_connection(self.engine) as conn, conn.begin():
            leases = conn.execute(
                select(SyncLock.run_id, SyncLock.acquired_at, SyncLock.expires_at).where(lapsed)
            ).all()
            expired = [lease.run_id for lease in leases]
            # A lease still the length of the queue's hold was never renewed: no worker
            # ever took its run up (none running), which is not a crash.
            never_taken = {
                lease.run_id
                for lease in leases
                if lease.expires_at - lease.acquired_at >= PREPARED_HOLD - timedelta(seconds=1)
            }
            if expired:
                conn.execute(delete(SyncLock).where(lapsed))
            orphaned = list(conn.scalars(select(SyncLog.id).where(orphan)))
            closed = _close_stopped(conn, [*expired, *orphaned], now, never_taken)
        return closed


def _paused_until(conn: Connection, run_id: uuid.UUID) -> datetime | None:
    row = conn.execute(select(SyncLog.status, SyncLog.details).where(SyncLog.id == run_id)).first()
    if row is None or row.status != "paused":
        return None
    try:
        return datetime.fromisoformat(str((row.details or {}).get("resumes_at")))
    except ValueError:
        return None


def _close_stopped(
    conn: Connection,
    run_ids: list[uuid.UUID],
    now: datetime,
    never_taken: set[uuid.UUID] | None = None,
) -> list[uuid.UUID]:
    """Mark these runs failed ("worker stopped", or "no worker" for those in `never_taken`)
    if they are still `running`."""
    if not run_ids:
        return []
    closed = list(
        conn.scalars(select(SyncLog.id).where(SyncLog.id.in_(run_ids), SyncLog.status == "running"))
    )
    for run_id in closed:
        details = conn.scalar(select(SyncLog.details).where(SyncLog.id == run_id)) or {}
        no_worker = never_taken is not None and run_id in never_taken
        conn.execute(
            update(SyncLog)
            .where(SyncLog.id == run_id, SyncLog.status == "running")
            .values(
                status="failed",
                finished_at=now,
                error_message=NO_WORKER if no_worker else WORKER_STOPPED,
                details={**details, "error_kind": "no_worker" if no_worker else "worker_stopped"},
            )
        )
        log.warning("sync.no_worker" if no_worker else "sync.worker_stopped", run_id=str(run_id))
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
