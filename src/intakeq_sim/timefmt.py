"""The simulator's own time arithmetic, written apart from pqsync's on purpose.

The simulator judges pqsync's date and zone handling; sharing that code would let one
mistake pass on both sides. IntakeQ sends epoch milliseconds (UTC), seven-decimal ISO
strings, and reads its date filters as whole days in the practice's zone.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ISO = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,7}))?(Z|[+-]\d{2}:\d{2})?$"
)


class BadTimestamp(ValueError):
    """A timestamp the simulator cannot read."""


def ms_from(moment: datetime) -> int:
    """Whole milliseconds since the epoch of an aware datetime."""
    if moment.tzinfo is None:
        raise BadTimestamp("naive datetime")
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def from_ms(ms: int) -> datetime:
    """An aware UTC datetime from epoch milliseconds."""
    try:
        return _EPOCH + timedelta(milliseconds=int(ms))
    except (OverflowError, ValueError) as exc:
        raise BadTimestamp(f"milliseconds out of range: {ms!r}") from exc


def iso7(moment: datetime) -> str:
    """`2025-10-24T15:00:00.0000000Z`: UTC with seven decimals, as IntakeQ writes it."""
    utc = moment.astimezone(UTC)
    return (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:"
        f"{utc.second:02d}.{utc.microsecond:06d}0Z"
    )


def parse_iso(text: str) -> datetime:
    """IntakeQ's ISO form (up to seven decimals; no offset means UTC)."""
    match = _ISO.match(text.strip())
    if match is None:
        raise BadTimestamp(f"not an ISO timestamp: {text!r}")
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    micros = int((match.group(7) or "0")[:6].ljust(6, "0"))
    offset = match.group(8) or "Z"
    try:
        moment = datetime(year, month, day, hour, minute, second, micros, tzinfo=UTC)
    except ValueError as exc:
        raise BadTimestamp(f"not an ISO timestamp: {text!r}") from exc
    if offset != "Z":
        sign = -1 if offset[0] == "-" else 1
        moment -= sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6]))
    return moment


def midnight_ms(day: date, zone: ZoneInfo) -> int:
    """Epoch milliseconds of local midnight starting `day` in `zone` (DST-aware)."""
    return ms_from(datetime(day.year, day.month, day.day, tzinfo=zone))
