"""When a daily run falls due in an organisation's own zone (DST-aware), as pure functions."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

NIGHTLY_AT = time(3, 0)
# A nightly run that has not started by this local time is reported as missed.
MISSED_AFTER = time(6, 0)


def local_instant(day: date, at: time, zone: ZoneInfo) -> datetime:
    """The UTC instant of wall-clock `at` on `day` in `zone`.

    A wall time that occurs twice (clocks going back) is its first occurrence; one that does
    not occur (clocks going forward over it) is the moment the clocks jump past it.
    """
    wall = datetime.combine(day, at, tzinfo=zone)
    first = wall.astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall.replace(tzinfo=None):
        return first
    # Skipped by a forward change: the moment of the change lies between the two readings
    # of the wall time (before-offset and after-offset); find it to the second.
    low = wall.replace(fold=1).astimezone(UTC)
    high = wall.replace(fold=0).astimezone(UTC)
    low, high = min(low, high), max(low, high)
    offset_before = low.astimezone(zone).utcoffset()
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).utcoffset() == offset_before:
            low = middle
        else:
            high = middle
    return high.replace(microsecond=0)


def latest_due_day(now: datetime, zone: ZoneInfo, at: time = NIGHTLY_AT) -> date:
    """The most recent local day whose `at` has come by `now` (today or yesterday)."""
    today = now.astimezone(zone).date()
    if local_instant(today, at, zone) <= now:
        return today
    return today - timedelta(days=1)


# The weekly verification: Sunday 04:00 in the practice's zone (after the nightly runs).
VERIFY_WEEKDAY = 6  # Monday is 0
VERIFY_AT = time(4, 0)


def latest_weekly_day(
    now: datetime, zone: ZoneInfo, weekday: int = VERIFY_WEEKDAY, at: time = VERIFY_AT
) -> date:
    """The most recent local `weekday` whose `at` has come by `now`."""
    today = now.astimezone(zone).date()
    day = today - timedelta(days=(today.weekday() - weekday) % 7)
    if local_instant(day, at, zone) > now:
        day -= timedelta(days=7)
    return day
