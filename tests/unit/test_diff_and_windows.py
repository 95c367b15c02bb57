import uuid
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from pqsync.domain.diff import appointment_changes, changes_as_json, describe_changes
from pqsync.domain.windows import Window, WindowError, default_window, new_days, resolve_window

T1 = datetime(2025, 11, 15, 14, 0, tzinfo=UTC)
T2 = datetime(2025, 11, 16, 14, 0, tzinfo=UTC)


def test_no_change_is_an_empty_diff() -> None:
    row = {"status": "confirmed", "start_time": T1, "provider_id": None}
    assert appointment_changes(row, dict(row)) == {}


def test_the_same_instant_in_another_zone_is_no_change() -> None:
    stored = {"start_time": T1}
    incoming = {"start_time": T1.astimezone(ZoneInfo("America/Denver"))}
    assert appointment_changes(stored, incoming) == {}


def test_it_reports_each_changed_field_with_old_and_new() -> None:
    provider = uuid.uuid4()
    changes = appointment_changes(
        {"status": "scheduled", "start_time": T1, "provider_id": None, "location_name": "A"},
        {"status": "confirmed", "start_time": T2, "provider_id": provider, "location_name": "A"},
    )
    assert changes == {
        "status": ("scheduled", "confirmed"),
        "start_time": (T1, T2),
        "provider_id": (None, provider),
    }
    assert changes_as_json(changes)["start_time"] == {
        "old": "2025-11-15T14:00:00+00:00",
        "new": "2025-11-16T14:00:00+00:00",
    }
    line = describe_changes(changes, {str(provider): "Dr. Sweeney"})
    assert "status: scheduled -> confirmed" in line
    assert "provider_id: none -> Dr. Sweeney" in line


def test_fields_that_are_not_tracked_are_ignored() -> None:
    assert appointment_changes({"status": "x", "price": 1}, {"status": "x", "price": 2}) == {}


def test_the_default_window_is_ninety_days_each_way_in_local_time() -> None:
    # 03:00 UTC on 1 Dec is still 30 Nov in Denver.
    window = default_window(datetime(2025, 12, 1, 3, 0, tzinfo=UTC), ZoneInfo("America/Denver"))
    assert window.start == date(2025, 9, 1)
    assert window.end == date(2026, 2, 28)


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("2025-02-30", None, "startDate: '2025-02-30' is not a real date"),
        ("tomorrow", None, "startDate"),
        ("2025-03-01", "2025-02-01", "endDate: must not be before startDate"),
        ("2024-01-01", "2025-12-31", "more than 400 days"),
    ],
)
def test_it_rejects_bad_date_ranges(start: str, end: str | None, message: str) -> None:
    with pytest.raises(WindowError) as caught:
        resolve_window(
            start, end, now=datetime(2025, 3, 1, tzinfo=UTC), zone=ZoneInfo("America/Denver")
        )
    assert message in str(caught.value)


def test_the_days_new_to_a_window_are_those_its_moves_brought_in() -> None:
    covered = Window(date(2025, 7, 26), date(2026, 1, 22))
    # Four days on: four days entered at the end; those that left at the start are gone.
    moved = Window(date(2025, 7, 30), date(2026, 1, 26))
    assert new_days(covered, moved) == [Window(date(2026, 1, 23), date(2026, 1, 26))]
    assert new_days(covered, covered) == []
    # An organisation looking further back and ahead: both edges come in.
    wider = Window(date(2025, 7, 20), date(2026, 1, 30))
    assert new_days(covered, wider) == [
        Window(date(2025, 7, 20), date(2025, 7, 25)),
        Window(date(2026, 1, 23), date(2026, 1, 30)),
    ]
    # A window that shrank brings in nothing; one wholly past the covered one is all new.
    assert new_days(covered, Window(date(2025, 8, 1), date(2026, 1, 1))) == []
    later = Window(date(2026, 3, 1), date(2026, 3, 9))
    assert new_days(covered, later) == [later]
