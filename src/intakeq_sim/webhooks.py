"""IntakeQ's webhooks: every change in the book is POSTed as an event to one configured URL.

The real IntakeQ signs nothing and publishes no retry policy, so a receiver must cope with
duplicated, delayed, reordered, lost and forged deliveries; the knobs here produce each of
them on purpose. Deliveries run on one background thread in due-time order: a random delay
per event (up to `max_delay_ms`) is what reorders them.
"""

from __future__ import annotations

import heapq
import itertools
import random
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

EVENT_TYPES = (
    "AppointmentCreated",
    "AppointmentConfirmed",
    "AppointmentRescheduled",
    "AppointmentCanceled",
    "AppointmentDeclined",
    "AppointmentMissed",
    "AppointmentDeleted",
)
_STATUS_EVENTS = {
    "Confirmed": "AppointmentConfirmed",
    "Canceled": "AppointmentCanceled",
    "Declined": "AppointmentDeclined",
    "Missed": "AppointmentMissed",
}


def event_for_update(old_status: str, new_status: str) -> str:
    """The event an edit raises: its new status's, else a reschedule (IntakeQ has no
    generic 'updated' event)."""
    if old_status != new_status and new_status in _STATUS_EVENTS:
        return _STATUS_EVENTS[new_status]
    return "AppointmentRescheduled"


@dataclass(frozen=True)
class WebhookKnobs:
    """Where events go and how badly they travel. Rates are fractions of events."""

    url: str | None = None
    practice_id: str = "sim-practice"
    duplicate_rate: float = 0.0
    drop_rate: float = 0.0
    max_delay_ms: int = 0  # each delivery waits a random 0..max_delay_ms: reorders them
    attempts: int = 3  # tries per delivery when the receiver fails or cannot be reached

    def updated(self, changes: Mapping[str, Any]) -> WebhookKnobs:
        known = set(self.__dataclass_fields__)
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown webhook setting {sorted(unknown)[0]!r}")
        values = {**self.as_dict(), **changes}
        for name in ("duplicate_rate", "drop_rate"):
            rate = values[name]
            if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
                raise ValueError(f"{name} must be between 0 and 1")
        for name in ("max_delay_ms", "attempts"):
            number = values[name]
            if isinstance(number, bool) or not isinstance(number, int) or number < 0:
                raise ValueError(f"{name} must be a whole number, not negative")
        if values["url"] is not None and not isinstance(values["url"], str):
            raise ValueError("url must be a string")
        values["practice_id"] = str(values["practice_id"])
        return WebhookKnobs(**values)

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(order=True)
class _Delivery:
    due: float
    seq: int
    body: dict[str, Any] = field(compare=False)
    attempt: int = field(default=0, compare=False)


class WebhookSender:
    """Queues an event per change and delivers it from one daemon thread."""

    def __init__(self, seed: int = 1, knobs: WebhookKnobs | None = None) -> None:
        self.knobs = knobs or WebhookKnobs()
        self._random = random.Random(f"webhooks:{seed}")  # noqa: S311 - a test double
        self._heap: list[_Delivery] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._in_flight = 0
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._counts: Counter[str] = Counter()

    # --- what the store and the control API call -------------------------------------------

    def configure(self, changes: Mapping[str, Any]) -> WebhookKnobs:
        with self._cond:
            self.knobs = self.knobs.updated(changes)
            return self.knobs

    def appointment_changed(self, event_type: str, appointment: Mapping[str, Any]) -> None:
        """A change happened: queue its event (maybe twice, maybe never, maybe late)."""
        knobs = self.knobs
        if not knobs.url:
            return
        body = {
            "EventType": event_type,
            "ActionPerformedByClient": bool(appointment.get("BookedByClient")),
            "Appointment": dict(appointment),
            "ClientId": appointment.get("ClientId"),
            "PracticeId": knobs.practice_id,
        }
        with self._cond:
            self._counts["events"] += 1
            if self._random.random() < knobs.drop_rate:
                self._counts["dropped"] += 1
                return
            copies = 2 if self._random.random() < knobs.duplicate_rate else 1
            self._counts["duplicated"] += copies - 1
            for _ in range(copies):
                self._push(body, knobs)

    def forge(self, body: Mapping[str, Any]) -> None:
        """Send a body as it is, as anyone who learned the URL could."""
        with self._cond:
            self._counts["forged"] += 1
            self._push(dict(body), self.knobs)

    def stats(self) -> dict[str, int]:
        with self._cond:
            counts = dict(self._counts)
            counts["pending"] = len(self._heap) + self._in_flight
        for name in ("events", "dropped", "duplicated", "forged", "delivered", "failed"):
            counts.setdefault(name, 0)
        return counts

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until every queued delivery was made or given up; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._heap or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=10)
        with self._cond:
            self._thread = None
            self._stopping = False

    # --- delivery ------------------------------------------------------------------------------

    def _push(self, body: dict[str, Any], knobs: WebhookKnobs) -> None:
        delay = self._random.uniform(0, knobs.max_delay_ms) / 1000 if knobs.max_delay_ms else 0
        heapq.heappush(self._heap, _Delivery(time.monotonic() + delay, next(self._seq), body))
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._deliver_forever, name="intakeq-webhooks", daemon=True
            )
            self._thread.start()
        self._cond.notify_all()

    def _deliver_forever(self) -> None:
        with httpx.Client(timeout=10.0) as http:
            while True:
                with self._cond:
                    delivery = self._next_due()
                    if delivery is None:
                        return
                    self._in_flight += 1
                    url = self.knobs.url
                    attempts = self.knobs.attempts
                delivered = False
                try:
                    delivered = bool(url) and self._post(http, url or "", delivery.body)
                finally:
                    with self._cond:
                        self._in_flight -= 1
                        if delivered:
                            self._counts["delivered"] += 1
                        elif delivery.attempt + 1 < attempts and not self._stopping:
                            delivery.attempt += 1
                            delivery.due = time.monotonic() + 0.2 * 2**delivery.attempt
                            heapq.heappush(self._heap, delivery)
                        else:
                            self._counts["failed"] += 1
                        self._cond.notify_all()

    def _next_due(self) -> _Delivery | None:
        """The next delivery once it is due (the lock held); None when stopping."""
        while not self._stopping:
            if self._heap:
                wait = self._heap[0].due - time.monotonic()
                if wait <= 0:
                    return heapq.heappop(self._heap)
                self._cond.wait(wait)
            else:
                self._cond.wait()
        return None

    @staticmethod
    def _post(http: httpx.Client, url: str, body: dict[str, Any]) -> bool:
        try:
            response = http.post(url, json=body)
        except httpx.HTTPError:
            return False
        return 200 <= response.status_code < 300
