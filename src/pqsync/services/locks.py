"""One running sync per scope, across processes and machines.

A row in `sync_locks` is a lease: the holder renews it while it works; a worker that dies
stops renewing, the lease expires, and the next caller takes the scope over with a
conditional UPDATE whose row count says who won.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from pqsync.db.tables import SyncLock

DEFAULT_LEASE = timedelta(minutes=5)


class SyncInProgress(Exception):
    """A run of this scope is already going; `run_id` names it."""

    def __init__(self, scope: str, run_id: uuid.UUID) -> None:
        self.scope = scope
        self.run_id = run_id
        super().__init__(f"a sync of {scope} is already running (run {run_id})")


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
        self._renewed: dict[uuid.UUID, datetime] = {}

    def acquire(self, scope_key: str, run_id: uuid.UUID, label: str | None = None) -> None:
        """Take the scope for `run_id`, or raise SyncInProgress naming the running run."""
        now = self.clock()
        self._renewed[run_id] = now
        values = {
            "scope_key": scope_key,
            "run_id": run_id,
            "holder": self.holder,
            "acquired_at": now,
            "expires_at": now + self.lease,
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(SyncLock).values(**values))
            return
        except IntegrityError:
            pass
        with self.engine.begin() as conn:
            taken = conn.execute(
                update(SyncLock)
                .where(SyncLock.scope_key == scope_key, SyncLock.expires_at < now)
                .values(**values)
            )
            if taken.rowcount == 1:
                return
            running = conn.scalar(select(SyncLock.run_id).where(SyncLock.scope_key == scope_key))
        if running is None:  # released between our two statements: try once more
            return self.acquire(scope_key, run_id, label)
        raise SyncInProgress(label or scope_key, running)

    def renew(self, scope_key: str, run_id: uuid.UUID) -> None:
        """Extend the lease; a no-op until a third of it has passed since the last renewal."""
        now = self.clock()
        last = self._renewed.get(run_id)
        if last is not None and now - last < self.lease / 3:
            return
        with self.engine.begin() as conn:
            conn.execute(
                update(SyncLock)
                .where(SyncLock.scope_key == scope_key, SyncLock.run_id == run_id)
                .values(expires_at=now + self.lease)
            )
        self._renewed[run_id] = now

    def release(self, scope_key: str, run_id: uuid.UUID) -> None:
        self._renewed.pop(run_id, None)
        with self.engine.begin() as conn:
            conn.execute(
                delete(SyncLock).where(SyncLock.scope_key == scope_key, SyncLock.run_id == run_id)
            )
