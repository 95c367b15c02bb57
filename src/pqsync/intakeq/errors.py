"""Typed IntakeQ errors. Messages never contain the API key or patient data."""

from __future__ import annotations

from datetime import datetime


class IntakeQError(Exception):
    """Base class of everything the IntakeQ client raises."""


class IntakeQUnreachable(IntakeQError):
    """IntakeQ could not be reached (connection refused, timeouts, dropped connections)."""


class IntakeQAuthError(IntakeQError):
    """401/403: the key was refused."""

    def __init__(self) -> None:
        super().__init__("IntakeQ rejected the API key")


class IntakeQRequestError(IntakeQError):
    """A 4xx other than 401/404/429: our request was wrong; retrying will not help."""

    def __init__(self, status: int, path: str) -> None:
        self.status = status
        self.path = path
        super().__init__(f"IntakeQ refused the request {path} with HTTP {status}")


class IntakeQServerError(IntakeQError):
    """5xx that persisted through every retry."""

    def __init__(self, status: int, path: str) -> None:
        self.status = status
        self.path = path
        super().__init__(f"IntakeQ answered HTTP {status} for {path} after retries")


class IntakeQNotFound(IntakeQError):
    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"IntakeQ has no {path}")


class BudgetExhausted(IntakeQError):
    """The day's request budget for this key is spent; nothing more may be sent until `frees_at`."""

    def __init__(self, used: int, limit: int, frees_at: datetime) -> None:
        self.used = used
        self.limit = limit
        self.frees_at = frees_at
        super().__init__(
            f"IntakeQ daily request budget exhausted: {used} of {limit} requests used in the "
            f"last 24 hours; budget frees up at {frees_at.isoformat(timespec='seconds')}"
        )
