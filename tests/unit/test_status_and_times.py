from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from pqsync.domain.status import map_status
from pqsync.domain.times import (
    TimeParseError,
    from_epoch_ms,
    in_window,
    local_day_bounds,
    parse_iso_utc,
    to_epoch_ms,
    to_iso7,
)

DENVER = ZoneInfo("America/Denver")


@pytest.mark.parametrize(
    ("raw", "mapped"),
    [
        ("Confirmed", "confirmed"),
        ("WaitingConfirmation", "scheduled"),
        ("Canceled", "cancelled"),
        ("Declined", "declined"),
        ("Missed", "no_show"),
        ("Rescheduled", "unknown"),
        ("", "unknown"),
        (None, "unknown"),
    ],
)
def test_it_maps_every_intakeq_status(raw: str | None, mapped: str) -> None:
    assert map_status(raw) == mapped


def test_it_parses_epoch_milliseconds_as_aware_utc() -> None:
    moment = from_epoch_ms(1761318000000)
    assert moment == datetime(2025, 10, 24, 15, 0, tzinfo=UTC)
    assert moment.tzinfo is UTC


def test_it_parses_seven_decimal_iso_times() -> None:
    assert parse_iso_utc("2025-10-24T15:00:00.0000000Z") == datetime(
        2025, 10, 24, 15, 0, tzinfo=UTC
    )
    assert parse_iso_utc("2025-10-24T15:00:00.1234567Z").microsecond == 123456
    assert parse_iso_utc("2025-10-24T15:00:00") == datetime(2025, 10, 24, 15, 0, tzinfo=UTC)
    assert parse_iso_utc("2025-10-24T09:00:00-06:00") == datetime(2025, 10, 24, 15, 0, tzinfo=UTC)


@pytest.mark.parametrize("bad", ["", "yesterday", "2025-13-40T00:00:00Z", "2025-10-24T15:00:00.Z"])
def test_it_rejects_malformed_iso_times(bad: str) -> None:
    with pytest.raises(TimeParseError):
        parse_iso_utc(bad)


def test_iso7_and_epoch_round_trip() -> None:
    moment = datetime(2025, 3, 9, 9, 30, tzinfo=UTC)
    assert to_iso7(moment) == "2025-03-09T09:30:00.0000000Z"
    assert parse_iso_utc(to_iso7(moment)) == moment
    assert from_epoch_ms(to_epoch_ms(moment)) == moment


def test_an_evening_appointment_in_denver_belongs_to_its_local_day() -> None:
    # 19:00 in Denver on 15 Nov is 02:00 UTC on 16 Nov.
    evening = datetime(2025, 11, 16, 2, 0, tzinfo=UTC)
    assert in_window(evening, date(2025, 11, 15), date(2025, 11, 15), DENVER)
    assert not in_window(evening, date(2025, 11, 16), date(2025, 11, 16), DENVER)


def test_day_bounds_follow_daylight_saving_time() -> None:
    start, end = local_day_bounds(date(2025, 3, 9), DENVER)  # spring forward: 23 hours
    assert (end - start).total_seconds() == 23 * 3600
    start, end = local_day_bounds(date(2025, 11, 2), DENVER)  # fall back: 25 hours
    assert (end - start).total_seconds() == 25 * 3600
