"""The simulator's runtime knobs: latency, faults, malformed records and rate limits."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

FAULT_KINDS = ("error500", "hang", "drop")
# The key the simulator accepts unless told another (pqsync's settings know it as
# SIMULATOR_API_KEY; the two are kept apart so the simulator imports nothing of pqsync).
DEFAULT_API_KEY = "pqsync-simulator-key"


@dataclass(frozen=True)
class SimConfig:
    """Immutable: a change builds a new one, so a request sees one consistent set of knobs.

    `fail_rate` is the fraction of API requests that fail, split evenly among `fault_kinds`:
    `error500` (HTTP 500), `hang` (no answer for `hang_seconds`, then the connection drops)
    and `drop` (the connection closes with no response). `malformed_rate` is the fraction of
    appointments that `GET /appointments` serves broken. A limit of None or 0 is no limit.
    """

    latency_ms: int = 0
    fail_rate: float = 0.0
    fault_kinds: tuple[str, ...] = FAULT_KINDS
    hang_seconds: float = 30.0
    malformed_rate: float = 0.0
    minute_limit: int | None = 10
    daily_limit: int | None = 500
    minute_window_seconds: float = 60.0
    daily_window_seconds: float = 86_400.0
    # A broken server that answers every listing with its first page, whatever `page` asks.
    ignore_page: bool = False

    def __post_init__(self) -> None:
        for name in ("fail_rate", "malformed_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        for name in ("latency_ms", "hang_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        for name in ("minute_window_seconds", "daily_window_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        for name in ("minute_limit", "daily_limit"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must not be negative")
        if not self.fault_kinds or set(self.fault_kinds) - set(FAULT_KINDS):
            raise ValueError(f"fault_kinds must be a non-empty subset of {list(FAULT_KINDS)}")

    def updated(self, changes: Mapping[str, Any]) -> SimConfig:
        """A copy with `changes` applied (JSON values); ValueError names a bad or unknown knob."""
        known = {f.name: f for f in dataclasses.fields(self)}
        values: dict[str, Any] = {}
        for name, raw in changes.items():
            if name not in known:
                raise ValueError(f"unknown setting {name!r}")
            values[name] = _coerce(name, raw)
        return dataclasses.replace(self, **values)

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["fault_kinds"] = list(self.fault_kinds)
        return out


def _coerce(name: str, raw: Any) -> Any:
    # Values come from JSON (lists, 1.0 for 1) or Python (tuples): check the type per knob.
    if name == "fault_kinds":
        if not isinstance(raw, list | tuple) or not all(isinstance(k, str) for k in raw):
            raise ValueError("fault_kinds must be a list of strings")
        return tuple(raw)
    if name == "ignore_page":
        if not isinstance(raw, bool):
            raise ValueError("ignore_page must be true or false")
        return raw
    if name in ("minute_limit", "daily_limit") and raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ValueError(f"{name} must be a number")
    if name in ("latency_ms", "minute_limit", "daily_limit"):
        if raw != int(raw):
            raise ValueError(f"{name} must be a whole number")
        return int(raw)
    return float(raw)
