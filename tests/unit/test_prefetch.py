"""Pages fetched ahead in a worker thread: in order, never more than `ahead` steps ahead of
the consumer, and nothing more taken from the source once the consumer stops."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import closing

import pytest

from pqsync.services.prefetch import prefetched


class Source:
    """Counts the steps taken; each step waits until the test lets it through."""

    def __init__(self, items: int) -> None:
        self.items = items
        self.taken = 0
        self.gate = threading.Semaphore(0)
        self.step_done = threading.Semaphore(0)

    def __iter__(self) -> Iterator[int]:
        for item in range(self.items):
            self.gate.acquire()
            self.taken += 1
            self.step_done.release()
            yield item


def test_items_come_in_order_and_at_most_ahead_steps_are_taken_early() -> None:
    source = Source(10)
    for _ in range(10):
        source.gate.release()  # every step may run at once
    with closing(prefetched(iter(source), ahead=3)) as fetched:
        assert next(fetched) == 0
        for _ in range(4):
            assert source.step_done.acquire(timeout=5)
        # Item 0 was handed over; steps 1, 2 and 3 ran ahead, and no fifth one.
        assert not source.step_done.acquire(timeout=0.2)
        assert source.taken == 4
        assert list(fetched) == list(range(1, 10))


def test_closing_early_takes_no_step_after_the_one_under_way() -> None:
    source = Source(10)
    source.gate.release()  # only the first step may run
    fetched = prefetched(iter(source), ahead=3)
    assert next(fetched) == 0
    # Step 2 is under way (held at the gate), steps 3 and 4 are queued behind it. Closing
    # waits for the step under way, which the gate lets through a moment later.
    threading.Timer(0.2, lambda: [source.gate.release() for _ in range(10)]).start()
    fetched.close()
    assert source.taken == 2


def test_ahead_must_be_at_least_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        next(prefetched(iter([1]), ahead=0))
