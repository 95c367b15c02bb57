"""Fetch the next IntakeQ page while the current one is being written."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


def prefetched(items: Iterator[T]) -> Generator[T, None, None]:
    """Yield `items` in order, advancing the source one step ahead in a worker thread.

    The source is only ever advanced by the worker, one step at a time. Closing this
    generator early lets the step already under way finish (one page fetched in vain), so
    callers that may stop after a page they have not seen yet should not prefetch it. Once
    this generator is closed the worker is done with the source: close this one first
    (`contextlib.closing`), then the source, or the source may still be running.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="intakeq-prefetch") as pool:
        future = pool.submit(next, items, _DONE)
        try:
            while True:
                item = future.result()
                if item is _DONE:
                    return
                future = pool.submit(next, items, _DONE)
                yield item  # type: ignore[misc]
        finally:
            future.cancel()  # a step not yet begun is not taken; one under way finishes
