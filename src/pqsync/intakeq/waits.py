"""Who hears that a request to IntakeQ has to wait: the run going on in this thread.

The budget (our count of IntakeQ's 10 a minute) and the client (IntakeQ answering 429)
`announce` each wait before sleeping; a run `listening` in the same thread records it, so
the dashboard can say "waiting for PracticeQ's request limit, about 40 seconds".
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# (seconds, why): why is "minute_limit" (our budget) or "rate_limited" (IntakeQ's 429).
WaitListener = Callable[[float, str], None]

_current = threading.local()


@contextmanager
def listening(listener: WaitListener) -> Iterator[None]:
    """Hear the waits announced in this thread while the block runs."""
    previous: WaitListener | None = getattr(_current, "listener", None)
    _current.listener = listener
    try:
        yield
    finally:
        _current.listener = previous


def announce(seconds: float, why: str) -> None:
    """Tell this thread's listener, if any, of a wait about to start; never raises."""
    listener: WaitListener | None = getattr(_current, "listener", None)
    if listener is None:
        return
    try:
        listener(seconds, why)
    except Exception:  # a report of a wait must never stop the request
        return
