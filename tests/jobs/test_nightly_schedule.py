"""The nightly schedule: 03:00 in each organisation's own zone, once per local day however
many workers tick, through both DST change days; one catch-up after downtime."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from sqlalchemy import Engine, insert, select

from pqsync.db.tables import NightlyClaim, Organization
from pqsync.services.schedule import NightlySchedule

ZONES = {"denver": "America/Denver", "new-york": "America/New_York", "honolulu": "Pacific/Honolulu"}
STEP = timedelta(minutes=5)


def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
def orgs(engine: Engine) -> dict[str, uuid.UUID]:
    ids = {slug: uuid.uuid4() for slug in ZONES}
    with engine.begin() as conn:
        for slug, zone in ZONES.items():
            conn.execute(
                insert(Organization).values(
                    id=ids[slug],
                    slug=slug,
                    name=slug.title(),
                    timezone=zone,
                    created_at=datetime(2026, 1, 1, tzinfo=UTC),
                )
            )
    return ids


def claims(engine: Engine) -> dict[uuid.UUID, list[tuple[date, datetime]]]:
    found: dict[uuid.UUID, list[tuple[date, datetime]]] = {}
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                NightlyClaim.organization_id, NightlyClaim.local_day, NightlyClaim.claimed_at
            ).order_by(NightlyClaim.local_day)
        )
        for org_id, day, claimed_at in rows:
            found.setdefault(org_id, []).append((day, claimed_at))
    return found


def tick_through(
    workers: list[NightlySchedule], start: datetime, end: datetime
) -> Iterator[datetime]:
    """Every worker ticks every STEP from `start` to `end` (frozen time, moved by hand)."""
    with time_machine.travel(start, tick=False) as traveller:
        moment = start
        while moment <= end:
            traveller.move_to(moment)
            for worker in workers:
                worker.claim_due()
            yield moment
            moment += STEP


@pytest.mark.parametrize(
    "first_day",
    [
        pytest.param(date(2026, 1, 14), id="ordinary-days"),
        pytest.param(date(2026, 3, 7), id="spring-forward-2026-03-08"),
        pytest.param(date(2026, 10, 31), id="fall-back-2026-11-01"),
    ],
)
def test_each_organisation_is_claimed_at_0300_local_once_a_day_by_one_of_two_workers(
    engine: Engine, orgs: dict[str, uuid.UUID], first_day: date
) -> None:
    workers = [NightlySchedule(engine, now, "worker-a"), NightlySchedule(engine, now, "worker-b")]
    # Start at midnight UTC of the first day (evening before in every zone) and run 3 days.
    start = datetime.combine(first_day, time(0), tzinfo=UTC)
    for _ in tick_through(workers, start, start + timedelta(days=3)):
        pass

    found = claims(engine)
    for slug, org_id in orgs.items():
        zone = ZoneInfo(ZONES[slug])
        days = found[org_id]
        # The first tick caught up the night before the test began (once); then each night.
        caught_up, nightly = days[0], days[1:]
        assert caught_up[1] == start
        expected_days = [first_day + timedelta(days=n) for n in range(3)]
        assert [day for day, _ in nightly] == expected_days, slug
        for day, claimed_at in nightly:
            local = claimed_at.astimezone(zone)
            assert (local.date(), local.time()) == (day, time(3, 0)), (slug, claimed_at)


def test_a_night_missed_while_no_worker_ran_is_run_once_when_one_comes_back(
    engine: Engine, orgs: dict[str, uuid.UUID]
) -> None:
    worker = NightlySchedule(engine, now, "worker-a")
    start = datetime(2026, 3, 6, 12, 0, tzinfo=UTC)
    for _ in tick_through([worker], start, start + timedelta(hours=1)):
        pass
    before = {org: len(days) for org, days in claims(engine).items()}

    # Down for three days (through the spring change), back at 18:00 UTC on the 9th.
    back = datetime(2026, 3, 9, 18, 0, tzinfo=UTC)
    with time_machine.travel(back, tick=False):
        assert {m.organization_name for m in worker.missed()} == {"Denver", "New-York", "Honolulu"}
    for _ in tick_through(
        [worker, NightlySchedule(engine, now, "b")], back, back + timedelta(hours=2)
    ):
        pass

    found = claims(engine)
    for slug, org_id in orgs.items():
        new = found[org_id][before[org_id] :]
        local_day = back.astimezone(ZoneInfo(ZONES[slug])).date()
        assert [(day, at) for day, at in new] == [(local_day, back)], slug
    with time_machine.travel(back + timedelta(hours=2), tick=False):
        # Still a night that did not happen by 06:00 (alerted once), now run.
        assert {m.organization_name for m in worker.missed()} == {"Denver", "New-York", "Honolulu"}
