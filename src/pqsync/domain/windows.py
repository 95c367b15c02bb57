"""The date window a sync covers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from pqsync.domain.times import local_day_bounds

DEFAULT_DAYS_BACK = 90
DEFAULT_DAYS_AHEAD = 90
MAX_SPAN_DAYS = 400
# Dates outside this range are typing mistakes; refused before anything reaches IntakeQ.
EARLIEST_DAY = date(2000, 1, 1)
LATEST_DAY = date(2100, 12, 31)


class WindowError(ValueError):
    """A date range that cannot be used; the message names the field and why."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


@dataclass(frozen=True)
class Window:
    """Local calendar dates [start, end], inclusive, as IntakeQ's date filters are."""

    start: date
    end: date

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def bounds(self, zone: ZoneInfo) -> tuple[datetime, datetime]:
        """[first moment, moment after the last) of the window's days in `zone`, in UTC."""
        return local_day_bounds(self.start, zone)[0], local_day_bounds(self.end, zone)[1]


def parse_day(field: str, value: str) -> date:
    """A YYYY-MM-DD date between EARLIEST_DAY and LATEST_DAY, or WindowError."""
    try:
        day = date.fromisoformat(value)
    except (TypeError, ValueError):
        raise WindowError(field, f"{value!r} is not a real date in YYYY-MM-DD form") from None
    if not EARLIEST_DAY <= day <= LATEST_DAY:
        raise WindowError(
            field, f"{value} is outside the plausible range {EARLIEST_DAY} to {LATEST_DAY}"
        )
    return day


def default_window(
    now: datetime,
    zone: ZoneInfo,
    days_back: int | None = None,
    days_ahead: int | None = None,
) -> Window:
    """Today in `zone`, minus/plus the organisation's days (90/90 unless overridden)."""
    today = now.astimezone(zone).date()
    back = DEFAULT_DAYS_BACK if days_back is None else days_back
    ahead = DEFAULT_DAYS_AHEAD if days_ahead is None else days_ahead
    return Window(today - timedelta(days=back), today + timedelta(days=ahead))


def make_window(start: date, end: date) -> Window:
    """Validate a requested window: start <= end and a span of at most 400 days."""
    if start > end:
        raise WindowError("endDate", "must not be before startDate")
    if (end - start).days + 1 > MAX_SPAN_DAYS:
        raise WindowError("endDate", f"the range spans more than {MAX_SPAN_DAYS} days")
    return Window(start, end)


def resolve_window(
    start: str | None,
    end: str | None,
    *,
    now: datetime,
    zone: ZoneInfo,
    days_back: int | None = None,
    days_ahead: int | None = None,
) -> Window:
    """Parse optional `--start/--end` (either may be omitted: it keeps its default)."""
    default = default_window(now, zone, days_back, days_ahead)
    start_day = parse_day("startDate", start) if start else default.start
    end_day = parse_day("endDate", end) if end else default.end
    return make_window(start_day, end_day)


def new_days(covered: Window, window: Window) -> list[Window]:
    """The days of `window` outside `covered`: those its end (or an earlier start) brought
    in. Days that left the window are out of scope, nothing more: they are not fetched,
    and no absence is judged on them."""
    ranges = []
    if window.start < covered.start:
        ranges.append(Window(window.start, min(window.end, covered.start - timedelta(days=1))))
    if window.end > covered.end:
        ranges.append(Window(max(window.start, covered.end + timedelta(days=1)), window.end))
    return ranges
