"""Fetch the next IntakeQ pages while the current one is being written."""

from __future__ import annotations

from collections import deque
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


def prefetched(items: Iterator[T], ahead: int = 1) -> Generator[T, None, None]:
    """Yield `items` in order, advancing the source up to `ahead` steps ahead in a worker
    thread.

    The source is only ever advanced by the worker, one step at a time. Closing this
    generator early lets the step already under way finish (one page fetched in vain; the
    steps queued behind it are not taken), so callers that may stop after a page they have
    not seen yet should not prefetch it. Once this generator is closed the worker is done
    with the source: close this one first (`contextlib.closing`), then the source, or the
    source may still be running.
    """
    if ahead < 1:
        raise ValueError("ahead must be at least 1")
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="intakeq-prefetch") as pool:
        # One worker runs the steps in the order they were submitted.
        steps = deque(pool.submit(next, items, _DONE) for _ in range(ahead))
        try:
            while True:
                item = steps.popleft().result()
                if item is _DONE:
                    return
                steps.append(pool.submit(next, items, _DONE))
                yield item  # type: ignore[misc]
        finally:
            for step in steps:
                step.cancel()  # a step not yet begun is not taken; one under way finishes
