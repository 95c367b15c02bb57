"""How the pages say times, and what `pqsync demo` tells the person running it."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from intakeq_sim import build_dataset, demo_directory
from pqsync.services.demo import demo_instructions
from pqsync.web.render import appointment_time, relative_time

DENVER = ZoneInfo("America/Denver")
NOW = datetime(2025, 11, 15, 14, 3, tzinfo=DENVER)


@pytest.mark.parametrize(
    ("moment", "shown"),
    [
        (datetime(2025, 11, 15, 14, 0, tzinfo=DENVER), "Nov 15, 2025 at 2:00 PM"),
        (datetime(2025, 3, 9, 9, 5, tzinfo=DENVER), "Mar 9, 2025 at 9:05 AM"),
        (datetime(2025, 12, 1, 0, 30, tzinfo=DENVER), "Dec 1, 2025 at 12:30 AM"),
        (datetime(2025, 12, 1, 12, 0, tzinfo=DENVER), "Dec 1, 2025 at 12:00 PM"),
    ],
)
def test_appointment_times_read_like_the_proposal(moment: datetime, shown: str) -> None:
    assert appointment_time(moment) == shown


@pytest.mark.parametrize(
    ("ago", "shown"),
    [
        (timedelta(seconds=20), "just now"),
        (timedelta(minutes=1), "1 minute ago"),
        (timedelta(minutes=2, seconds=30), "2 minutes ago"),
        (timedelta(hours=2, minutes=59), "2 hours ago"),
        (timedelta(days=3), "3 days ago"),
        (timedelta(hours=-5), "in 5 hours"),
    ],
)
def test_relative_times(ago: timedelta, shown: str) -> None:
    assert relative_time(NOW - ago, NOW) == shown


def test_never_synced_says_never() -> None:
    assert relative_time(None, NOW) == "Never"


def test_the_demo_names_the_dashboard_two_logins_and_how_to_book_a_follow_up() -> None:
    directory = demo_directory(build_dataset(1, date(2025, 11, 15)))
    lines = "\n".join(
        demo_instructions(directory, "http://127.0.0.1:8765/_sim", 8000, date(2025, 11, 15))
    )
    assert "Dashboard: http://127.0.0.1:8000/" in lines
    assert "case manager: jordan@firststephouse.org /" in lines
    assert "staff admin: ops@clinic.example /" in lines
    assert "curl -X POST http://127.0.0.1:8765/_sim/appointments" in lines
    assert '"StartDateLocal": "2025-11-16T10:30:00"' in lines
