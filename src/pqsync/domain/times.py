"""Time parsing and windows; every datetime here is timezone-aware."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

_ISO_FRACTION = re.compile(
    r"^(?P<head>\d{4}-\d\d-\d\d[T ]\d\d:\d\d(?::\d\d)?)"
    r"(?:\.(?P<frac>\d+))?"
    r"(?P<tz>Z|[+-]\d\d:?\d\d)?$"
)


class TimeParseError(ValueError):
    """A timestamp could not be understood."""


def from_epoch_ms(value: int | float) -> datetime:
    """Milliseconds since the epoch (IntakeQ's `StartDate`) as an aware UTC datetime."""
    try:
        return datetime.fromtimestamp(float(value) / 1000.0, tz=UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise TimeParseError(f"epoch milliseconds out of range: {value!r}") from exc


def parse_iso_utc(value: str) -> datetime:
    """Parse IntakeQ's ISO strings (`2025-10-24T15:00:00.0000000Z`, up to 7 decimals).

    A string without an offset is taken as UTC, which is what IntakeQ's `*Iso` fields mean.
    """
    match = _ISO_FRACTION.match(value.strip())
    if not match:
        raise TimeParseError(f"not an ISO timestamp: {value!r}")
    frac = (match.group("frac") or "")[:6].ljust(6, "0")
    tz = match.group("tz") or "Z"
    if tz == "Z":
        tz = "+00:00"
    try:
        parsed = datetime.fromisoformat(f"{match.group('head')}.{frac}{tz}")
    except ValueError as exc:
        raise TimeParseError(f"not an ISO timestamp: {value!r}") from exc
    return parsed.astimezone(UTC)


def to_epoch_ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("naive datetime")
    return round(moment.timestamp() * 1000)


def to_iso7(moment: datetime) -> str:
    """IntakeQ's seven-decimal UTC form."""
    utc = moment.astimezone(UTC).replace(tzinfo=None)
    return utc.isoformat(timespec="microseconds") + "0Z"


def local_day_bounds(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """[start, end) of a calendar day in `zone`, as aware UTC datetimes (DST-aware)."""
    start = datetime.combine(day, time.min, tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), time.min, tzinfo=zone)
    return start.astimezone(UTC), end.astimezone(UTC)


def in_window(moment: datetime, start: date, end: date, zone: ZoneInfo) -> bool:
    """Whether `moment` falls on a local date in [start, end] (inclusive, as IntakeQ's filter)."""
    local_day = moment.astimezone(zone).date()
    return start <= local_day <= end
