"""How the simulator treats traffic: per-key rate limits, injected faults and request stats."""

from __future__ import annotations

import hashlib
import random
import threading
from collections import Counter, defaultdict, deque
from typing import Any

from intakeq_sim.config import SimConfig


class RateLimiter:
    """Rolling-window limits per API key; only admitted requests use up the budget."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._minute: dict[str, deque[float]] = defaultdict(deque)
        self._day: dict[str, deque[float]] = defaultdict(deque)

    def admit(self, key: str, now: float, config: SimConfig) -> bool:
        """Count the request at `now` (seconds) and say whether it is within both limits."""
        with self._lock:
            minute = self._minute[key]
            day = self._day[key]
            _prune(minute, now - config.minute_window_seconds)
            _prune(day, now - config.daily_window_seconds)
            if config.minute_limit and len(minute) >= config.minute_limit:
                return False
            if config.daily_limit and len(day) >= config.daily_limit:
                return False
            minute.append(now)
            day.append(now)
            return True

    def reset(self) -> None:
        with self._lock:
            self._minute.clear()
            self._day.clear()


def _prune(stamps: deque[float], older_than: float) -> None:
    while stamps and stamps[0] <= older_than:
        stamps.popleft()


class TrafficStats:
    """What the API side received, for tests and benchmarks to assert on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._by_route: dict[str, Counter[str]] = defaultdict(Counter)
            self._outcomes: Counter[str] = Counter()
            self._accepted: deque[float] = deque()
            self._max_in_window = 0
            self._malformed = 0

    def record(self, route: str, outcome: str) -> None:
        """`outcome` is the HTTP status as text, or `hang`/`drop` when nothing was answered."""
        with self._lock:
            self._by_route[route][outcome] += 1
            self._outcomes[outcome] += 1

    def accepted(self, now: float, window_seconds: float) -> None:
        """A request passed the rate limiter; tracks the busiest window seen."""
        with self._lock:
            self._accepted.append(now)
            _prune(self._accepted, now - window_seconds)
            self._max_in_window = max(self._max_in_window, len(self._accepted))

    def malformed(self, count: int) -> None:
        with self._lock:
            self._malformed += count

    def snapshot(self, window_seconds: float) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": sum(self._outcomes.values()),
                "by_status": dict(sorted(self._outcomes.items())),
                "by_route": {
                    route: dict(sorted(counts.items()))
                    for route, counts in sorted(self._by_route.items())
                },
                "rate_limited": self._outcomes["429"],
                "faults": {kind: self._outcomes[kind] for kind in ("hang", "drop")}
                | {"error500": self._outcomes["500"]},
                "malformed_records": self._malformed,
                "max_accepted_in_window": self._max_in_window,
                "window_seconds": window_seconds,
            }


class FaultPlan:
    """Decides which requests fail, from a seeded Random so a run can be replayed."""

    def __init__(self, seed: int) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(f"faults:{seed}")  # noqa: S311 - not security

    def next_fault(self, config: SimConfig) -> str | None:
        if config.fail_rate <= 0:
            return None
        with self._lock:
            if self._rng.random() >= config.fail_rate:
                return None
            return config.fault_kinds[self._rng.randrange(len(config.fault_kinds))]


MALFORMED_KINDS = ("missing_id", "null_start", "bad_date", "null_fields")


def malformed_kind(seed: int, appointment_id: str, rate: float) -> str | None:
    """Which way (if any) this appointment is served broken: fixed per (seed, Id).

    A hash rather than a Random, so the same records are broken on every page and request,
    like a bad row in the vendor's database.
    """
    if rate <= 0:
        return None
    digest = hashlib.sha256(f"{seed}:{appointment_id}".encode()).digest()
    if int.from_bytes(digest[:4], "big") / 2**32 >= rate:
        return None
    return MALFORMED_KINDS[digest[4] % len(MALFORMED_KINDS)]


def malform(record: dict[str, Any], kind: str) -> dict[str, Any]:
    """A broken copy of a rendered appointment; only `null_fields` is still usable."""
    broken = dict(record)
    if kind == "missing_id":
        del broken["Id"]
    elif kind == "null_start":
        broken.update(StartDate=None, StartDateIso=None, EndDate=None, EndDateIso=None)
    elif kind == "bad_date":
        broken.update(StartDate="2025-13-45 25:61", StartDateIso="not a date")
    else:
        broken.update(ClientEmail=None, PractitionerId=None, ServiceName=None, Status=None)
        del broken["ClientName"]
        broken["UnexpectedField"] = {"Nested": [1, 2, 3]}
    return broken
