"""The per-key IntakeQ request budget, shared by every process that uses the same key.

IntakeQ allows about 10 requests a minute and 500 a day per key and answers 429 beyond
that. Every try the client makes first reserves a slot here: when the minute window is
full the caller sleeps until a slot ages out; when the day's budget is spent it gets
`BudgetExhausted` instead of a request that would only burn more of the limit.
"""

from __future__ import annotations

import hashlib
import threading
import time
from abc import ABC, abstractmethod
from bisect import bisect_left, insort
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol, TypedDict, Unpack

from sqlalchemy import Connection, Engine, Integer, cast, delete, func, insert, select, update

from pqsync.db.tables import IntakeQRequest
from pqsync.intakeq.errors import BudgetExhausted
from pqsync.logging import EventLogger, get_logger

DAY = timedelta(hours=24)
DEFAULT_MINUTE_WINDOW = timedelta(seconds=60)

# First key of PostgreSQL's two-key advisory locks ("pqsy"); the two-key space never
# collides with single-bigint advisory locks taken elsewhere.
_PG_LOCK_CLASS = 0x70717379

Clock = Callable[[], datetime]
Sleep = Callable[[float], None]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def key_fingerprint(api_key: str) -> str:
    """sha256 hex of the API key: what the request log stores instead of the key."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class BudgetUsage:
    """Requests counted in the current minute and 24 h windows."""

    minute_used: int
    day_used: int
    minute_limit: int
    daily_limit: int
    day_frees_at: datetime | None  # when the oldest request of the 24 h window ages out


class RequestBudget(Protocol):
    """What the IntakeQ client needs: reserve one slot per try, and report usage."""

    def acquire(self) -> None:
        """Reserve one request: sleep while the minute window is full, raise
        `BudgetExhausted` when the day's budget is spent."""
        ...

    def settle(self) -> None:
        """The try reserved last by this thread has been answered (or failed): date it now.

        IntakeQ counts a request when it arrives, which is after we reserved it; dating
        the slot at the answer means the next window can never start before IntakeQ's.
        """
        ...

    def usage(self) -> BudgetUsage:
        """Current usage of this key's windows."""
        ...


class _SlidingWindows(ABC):
    """The rules both budgets share; subclasses store the timestamps.

    A request sent at `t` counts against a window while `now - t < window`, so
    `limit + 1` consecutive requests are always at least one window apart.
    """

    def __init__(
        self,
        *,
        minute_limit: int,
        daily_limit: int,
        minute_window: timedelta = DEFAULT_MINUTE_WINDOW,
        clock: Clock = _utc_now,
        sleep: Sleep = time.sleep,
        on_wait: Callable[[float], None] | None = None,
        logger: EventLogger | None = None,
    ) -> None:
        if minute_limit < 1 or daily_limit < 1:
            raise ValueError("request limits must be at least 1")
        if minute_window <= timedelta(0):
            raise ValueError("minute_window must be positive")
        self.minute_limit = minute_limit
        self.daily_limit = daily_limit
        self.minute_window = minute_window
        self._clock = clock
        self._sleep = sleep
        self._on_wait = on_wait
        self._log = logger if logger is not None else get_logger("pqsync.intakeq.budget")

    def acquire(self) -> None:
        """Reserve one request slot, waiting for the minute window; see RequestBudget."""
        while True:
            wait = self._reserve()
            if wait is None:
                return
            self._log.info(
                "intakeq.budget.wait",
                wait_s=round(wait, 3),
                minute_limit=self.minute_limit,
                minute_window_s=self.minute_window.total_seconds(),
            )
            if self._on_wait is not None:
                self._on_wait(wait)
            self._sleep(wait)

    @abstractmethod
    def _reserve(self) -> float | None:
        """Record one request now and return None, or return the seconds to wait first."""

    def _in_minute_window(self, now: datetime, times: Sequence[datetime]) -> list[datetime]:
        return [t for t in times if now - t < self.minute_window]

    def _verdict(self, now: datetime, day_times: Sequence[datetime]) -> float | None:
        """None when a request may go now, else the seconds until a minute slot frees.

        `day_times` are the key's requests of the last 24 h, sorted ascending.
        """
        if len(day_times) >= self.daily_limit:
            frees_at = day_times[len(day_times) - self.daily_limit] + DAY
            raise BudgetExhausted(len(day_times), self.daily_limit, frees_at)
        minute_times = self._in_minute_window(now, day_times)
        if len(minute_times) >= self.minute_limit:
            frees_at = minute_times[len(minute_times) - self.minute_limit] + self.minute_window
            return (frees_at - now).total_seconds()
        return None

    def _usage(self, now: datetime, day_times: Sequence[datetime]) -> BudgetUsage:
        return BudgetUsage(
            minute_used=len(self._in_minute_window(now, day_times)),
            day_used=len(day_times),
            minute_limit=self.minute_limit,
            daily_limit=self.daily_limit,
            day_frees_at=day_times[0] + DAY if day_times else None,
        )


class BudgetOptions(TypedDict, total=False):
    """The optional settings every budget takes (see _SlidingWindows)."""

    minute_window: timedelta
    clock: Clock
    sleep: Sleep
    on_wait: Callable[[float], None] | None
    logger: EventLogger | None


class MemoryBudget(_SlidingWindows):
    """The budget for one process (thread-safe); for tests and runs without a database."""

    def __init__(
        self, *, minute_limit: int, daily_limit: int, **options: Unpack[BudgetOptions]
    ) -> None:
        super().__init__(minute_limit=minute_limit, daily_limit=daily_limit, **options)
        self._sent: list[datetime] = []
        self._lock = threading.Lock()
        self._last = threading.local()

    def _day_times(self, now: datetime) -> list[datetime]:
        self._sent = [t for t in self._sent if now - t < DAY]
        return self._sent

    def _reserve(self) -> float | None:
        with self._lock:
            now = self._clock()
            wait = self._verdict(now, self._day_times(now))
            if wait is None:
                insort(self._sent, now)
                self._last.at = now
            return wait

    def settle(self) -> None:
        """Re-date this thread's last reservation to now (see RequestBudget.settle)."""
        reserved: datetime | None = getattr(self._last, "at", None)
        if reserved is None:
            return
        self._last.at = None
        with self._lock:
            index = bisect_left(self._sent, reserved)
            if index < len(self._sent) and self._sent[index] == reserved:
                del self._sent[index]
            insort(self._sent, max(reserved, self._clock()))

    def usage(self) -> BudgetUsage:
        """Current usage of the minute and 24 h windows."""
        with self._lock:
            now = self._clock()
            return self._usage(now, self._day_times(now))


class DatabaseBudget(_SlidingWindows):
    """The budget in `intakeq_request_log`, shared by every process using the database.

    Counting and recording happen in one transaction under a lock per key, so two
    processes can never both take the last slot of a window:
    - PostgreSQL: `pg_advisory_xact_lock` on the key's fingerprint.
    - SQLite: the transaction's first statement is a write (deleting the key's rows older
      than 24 h), which takes the database's single write lock, exactly as `BEGIN IMMEDIATE`
      would; other acquirers queue on the engine's busy timeout until we commit.
    The clock is read only after the lock is held, so recorded times follow lock order.
    """

    def __init__(
        self,
        engine: Engine,
        api_key: str,
        *,
        minute_limit: int,
        daily_limit: int,
        **options: Unpack[BudgetOptions],
    ) -> None:
        super().__init__(minute_limit=minute_limit, daily_limit=daily_limit, **options)
        dialect = engine.dialect.name
        if dialect not in ("sqlite", "postgresql"):
            raise ValueError(
                f"the IntakeQ request budget supports SQLite and PostgreSQL, not {dialect}"
            )
        self._engine = engine
        self._postgres = dialect == "postgresql"
        self._last = threading.local()
        self.fingerprint = key_fingerprint(api_key)

    def _times_since(self, conn: Connection, since: datetime) -> list[datetime]:
        rows = conn.execute(
            select(IntakeQRequest.sent_at)
            .where(IntakeQRequest.key_fingerprint == self.fingerprint)
            .where(IntakeQRequest.sent_at > since)
            .order_by(IntakeQRequest.sent_at)
        )
        return list(rows.scalars())

    def _reserve(self) -> float | None:
        with self._engine.begin() as conn:
            if self._postgres:
                objid = int.from_bytes(bytes.fromhex(self.fingerprint[:8]), "big", signed=True)
                lock = func.pg_advisory_xact_lock(
                    cast(_PG_LOCK_CLASS, Integer), cast(objid, Integer)
                )
                conn.execute(select(lock))
            # On SQLite this write takes the lock (see the class docstring); it stays first.
            conn.execute(
                delete(IntakeQRequest)
                .where(IntakeQRequest.key_fingerprint == self.fingerprint)
                .where(IntakeQRequest.sent_at <= self._clock() - DAY)
            )
            now = self._clock()
            wait = self._verdict(now, self._times_since(conn, now - DAY))
            if wait is None:
                inserted = conn.execute(
                    insert(IntakeQRequest).values(key_fingerprint=self.fingerprint, sent_at=now)
                )
                primary_key = inserted.inserted_primary_key
                self._last.id = primary_key[0] if primary_key is not None else None
                self._last.at = now
            return wait

    def settle(self) -> None:
        """Re-date this thread's last reservation to now (see RequestBudget.settle)."""
        row_id = getattr(self._last, "id", None)
        if row_id is None:
            return
        self._last.id = None
        with self._engine.begin() as conn:
            conn.execute(
                update(IntakeQRequest)
                .where(IntakeQRequest.id == row_id)
                .values(sent_at=max(self._last.at, self._clock()))
            )

    def usage(self) -> BudgetUsage:
        """Current usage of this key's minute and 24 h windows, from the database."""
        now = self._clock()
        with self._engine.connect() as conn:
            day_times = self._times_since(conn, now - DAY)
        return self._usage(now, day_times)
