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
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypedDict, Unpack

from sqlalchemy import (
    Connection,
    Engine,
    Insert,
    Integer,
    String,
    bindparam,
    cast,
    delete,
    func,
    insert,
    select,
    update,
)

from pqsync.db.engine import write_connection
from pqsync.db.tables import IntakeQRequest
from pqsync.intakeq import waits
from pqsync.intakeq.errors import BudgetExhausted
from pqsync.logging import EventLogger, get_logger

DAY = timedelta(hours=24)
_PRUNE_EVERY = timedelta(minutes=10)
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
        An answer within the budget's `settle_within` keeps its reservation's date: the
        windows are that much longer than IntakeQ's, which covers the delay.
        """
        ...

    def usage(self) -> BudgetUsage:
        """Current usage of this key's windows."""
        ...


class _Times(Protocol):
    """A key's request times, as the window rules read them."""

    def count(self, since: datetime) -> int:
        """How many requests were sent after `since`."""
        ...

    def nth(self, since: datetime, index: int) -> datetime:
        """The `index`-th oldest (from 0) of the requests sent after `since`."""
        ...


class _SlidingWindows(ABC):
    """The rules both budgets share; subclasses store the timestamps.

    A request sent at `t` counts against a window while `now - t < window`, so
    `limit + 1` consecutive requests are always at least one window apart. Only counts
    are read per request, and one timestamp when a window is full: the cost of a
    reservation does not grow with the day's requests.
    """

    def __init__(
        self,
        *,
        minute_limit: int,
        daily_limit: int,
        minute_window: timedelta = DEFAULT_MINUTE_WINDOW,
        settle_within: timedelta = timedelta(0),
        clock: Clock = _utc_now,
        sleep: Sleep = time.sleep,
        on_wait: Callable[[float], None] | None = None,
        logger: EventLogger | None = None,
    ) -> None:
        if minute_limit < 1 or daily_limit < 1:
            raise ValueError("request limits must be at least 1")
        if minute_window <= timedelta(0):
            raise ValueError("minute_window must be positive")
        if settle_within < timedelta(0) or settle_within >= minute_window:
            raise ValueError("settle_within must be at least 0 and shorter than minute_window")
        self.minute_limit = minute_limit
        self.daily_limit = daily_limit
        self.minute_window = minute_window
        # The day window gets the same allowance as the minute window's margin (see settle).
        self.settle_within = settle_within
        self.day_window = DAY + settle_within
        self._clock = clock
        self._sleep = sleep
        self._on_wait = on_wait
        self._log = logger if logger is not None else get_logger("pqsync.intakeq.budget")
        self._last = threading.local()

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
            waits.announce(wait, "minute_limit")
            self._sleep(wait)

    def settle(self) -> None:
        """Re-date this thread's last reservation to now (see RequestBudget.settle)."""
        reserved: datetime | None = getattr(self._last, "at", None)
        if reserved is None:
            return
        self._last.at = None
        now = self._clock()
        if now - reserved <= self.settle_within:
            return  # answered within the windows' margin: its date is already safe
        self._redate(reserved, getattr(self._last, "ref", None), now)

    def _reserved(self, at: datetime, ref: object = None) -> None:
        self._last.at = at
        self._last.ref = ref

    @abstractmethod
    def _reserve(self) -> float | None:
        """Record one request now and return None, or return the seconds to wait first."""

    @abstractmethod
    def _redate(self, reserved: datetime, ref: object, now: datetime) -> None:
        """Move the reservation made at `reserved` (`ref` as `_reserved` was given) to `now`."""

    def _verdict(self, now: datetime, times: _Times) -> float | None:
        """None when a request may go now, else the seconds until a minute slot frees."""
        day_since = now - self.day_window
        day_used = times.count(day_since)
        if day_used >= self.daily_limit:
            frees_at = times.nth(day_since, day_used - self.daily_limit) + self.day_window
            raise BudgetExhausted(day_used, self.daily_limit, frees_at)
        minute_since = now - self.minute_window
        minute_used = times.count(minute_since)
        if minute_used >= self.minute_limit:
            oldest = times.nth(minute_since, minute_used - self.minute_limit)
            return (oldest + self.minute_window - now).total_seconds()
        return None

    def _usage(self, now: datetime, times: _Times) -> BudgetUsage:
        day_since = now - self.day_window
        day_used = times.count(day_since)
        return BudgetUsage(
            minute_used=times.count(now - self.minute_window),
            day_used=day_used,
            minute_limit=self.minute_limit,
            daily_limit=self.daily_limit,
            day_frees_at=times.nth(day_since, 0) + self.day_window if day_used else None,
        )


class BudgetOptions(TypedDict, total=False):
    """The optional settings every budget takes (see _SlidingWindows)."""

    minute_window: timedelta
    settle_within: timedelta
    clock: Clock
    sleep: Sleep
    on_wait: Callable[[float], None] | None
    logger: EventLogger | None


class _SortedTimes:
    def __init__(self, times: list[datetime]) -> None:
        self._times = times

    def count(self, since: datetime) -> int:
        return len(self._times) - bisect_right(self._times, since)

    def nth(self, since: datetime, index: int) -> datetime:
        return self._times[bisect_right(self._times, since) + index]


class MemoryBudget(_SlidingWindows):
    """The budget for one process (thread-safe); for tests and runs without a database."""

    def __init__(
        self, *, minute_limit: int, daily_limit: int, **options: Unpack[BudgetOptions]
    ) -> None:
        super().__init__(minute_limit=minute_limit, daily_limit=daily_limit, **options)
        self._sent: list[datetime] = []
        self._lock = threading.Lock()

    def _times(self, now: datetime) -> _SortedTimes:
        cutoff = bisect_right(self._sent, now - self.day_window)
        if cutoff:
            del self._sent[:cutoff]
        return _SortedTimes(self._sent)

    def _reserve(self) -> float | None:
        with self._lock:
            now = self._clock()
            wait = self._verdict(now, self._times(now))
            if wait is None:
                insort(self._sent, now)
                self._reserved(now)
            return wait

    def _redate(self, reserved: datetime, ref: object, now: datetime) -> None:
        with self._lock:
            index = bisect_left(self._sent, reserved)
            if index < len(self._sent) and self._sent[index] == reserved:
                del self._sent[index]
            insort(self._sent, max(reserved, now))

    def usage(self) -> BudgetUsage:
        """Current usage of the minute and 24 h windows."""
        with self._lock:
            now = self._clock()
            return self._usage(now, self._times(now))


class _StoredTimes:
    def __init__(self, conn: Connection, fingerprint: str) -> None:
        self._conn = conn
        self._fingerprint = fingerprint

    def _since(self, since: datetime) -> tuple[Any, ...]:
        return (
            IntakeQRequest.key_fingerprint == self._fingerprint,
            IntakeQRequest.sent_at > since,
        )

    def count(self, since: datetime) -> int:
        counted = self._conn.scalar(select(func.count()).where(*self._since(since)))
        return int(counted or 0)

    def nth(self, since: datetime, index: int) -> datetime:
        found = self._conn.scalar(
            select(IntakeQRequest.sent_at)
            .where(*self._since(since))
            .order_by(IntakeQRequest.sent_at)
            .offset(index)
            .limit(1)
        )
        assert found is not None, "counted requests must be found"
        return found


def _record_if_room(fingerprint: str, minute_limit: int, daily_limit: int) -> Insert:
    """INSERT one request at `now` if both windows (after `day_since`, `minute_since`)
    have room; RETURNING its id, or nothing."""
    sent_at = IntakeQRequest.sent_at

    def used(since: str) -> Any:
        return (
            select(func.count())
            .where(
                IntakeQRequest.key_fingerprint == bindparam("fingerprint", fingerprint, String),
                sent_at > bindparam(since, type_=sent_at.type),
            )
            .scalar_subquery()
        )

    return (
        insert(IntakeQRequest)
        .from_select(
            ["key_fingerprint", "sent_at"],
            select(
                bindparam("fingerprint", fingerprint, String), bindparam("now", type_=sent_at.type)
            ).where(
                used("day_since") < bindparam("daily_limit", daily_limit, Integer),
                used("minute_since") < bindparam("minute_limit", minute_limit, Integer),
            ),
        )
        .returning(IntakeQRequest.id)
    )


class DatabaseBudget(_SlidingWindows):
    """The budget in `intakeq_request_log`, shared by every process using the database.

    Counting and recording happen in one durable transaction under a lock per key, so two
    processes can never both take the last slot of a window, and a crash forgets no request:
    - PostgreSQL: `pg_advisory_xact_lock` on the key's fingerprint.
    - SQLite: the transaction starts with BEGIN IMMEDIATE (the database's write lock).
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
        self.fingerprint = key_fingerprint(api_key)
        self._pruned_at: datetime | None = None
        self._record = _record_if_room(self.fingerprint, minute_limit, daily_limit)
        objid = int.from_bytes(bytes.fromhex(self.fingerprint[:8]), "big", signed=True)
        self._key_lock = select(
            func.pg_advisory_xact_lock(cast(_PG_LOCK_CLASS, Integer), cast(objid, Integer))
        )

    @contextmanager
    def _locked(self) -> Iterator[Connection]:
        with write_connection(self._engine) as conn, conn.begin():
            if self._postgres:
                conn.execute(self._key_lock)
            yield conn

    def _reserve(self) -> float | None:
        with self._locked() as conn:
            now = self._clock()
            self._prune(conn, now)
            # The usual case in one statement: record the request if both windows have room.
            recorded = conn.execute(
                self._record,
                {
                    "now": now,
                    "day_since": now - self.day_window,
                    "minute_since": now - self.minute_window,
                },
            ).scalar()
            if recorded is not None:
                self._reserved(now, recorded)
                return None
            # A window is full: how long until it frees (or BudgetExhausted for the day).
            wait = self._verdict(now, _StoredTimes(conn, self.fingerprint))
            assert wait is not None, "a full window must have been found"
            return wait

    def _prune(self, conn: Connection, now: datetime) -> None:
        """Delete this key's requests older than the day window, every few minutes: only
        storage needs it (counting reads just the window)."""
        if self._pruned_at is not None and now - self._pruned_at < _PRUNE_EVERY:
            return
        conn.execute(
            delete(IntakeQRequest)
            .where(IntakeQRequest.key_fingerprint == self.fingerprint)
            .where(IntakeQRequest.sent_at <= now - self.day_window)
        )
        self._pruned_at = now

    def _redate(self, reserved: datetime, ref: object, now: datetime) -> None:
        if ref is None:
            return
        with write_connection(self._engine) as conn, conn.begin():
            conn.execute(
                update(IntakeQRequest)
                .where(IntakeQRequest.id == ref)
                .values(sent_at=max(reserved, now))
            )

    def usage(self) -> BudgetUsage:
        """Current usage of this key's minute and 24 h windows, from the database."""
        now = self._clock()
        with self._engine.connect() as conn:
            return self._usage(now, _StoredTimes(conn, self.fingerprint))
