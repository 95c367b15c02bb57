"""Clocks for the simulator: the real one, and one that tests move by hand."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The default clock."""
    return datetime.now(UTC)


class ManualClock:
    """A clock that stands still until advanced, so rate windows and deletions age without sleep.

    Pass it as `clock=` to SimulatorServer; it is called from the server's threads.
    """

    def __init__(self, now: datetime) -> None:
        if now.tzinfo is None:
            raise ValueError("naive datetime")
        self._now = now
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    @property
    def now(self) -> datetime:
        return self()

    def advance(self, delta: timedelta) -> datetime:
        """Move forward by `delta`; returns the new time."""
        with self._lock:
            self._now += delta
            return self._now
