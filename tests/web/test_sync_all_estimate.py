"""Sync all's estimate follows the date range, also before the practice's size is known:
a longer range never promises fewer requests, and an 11-year range is no longer "at most
5 requests"."""

from __future__ import annotations

from datetime import date, timedelta

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session
from web_support import Seed

from pqsync.bootstrap import App
from pqsync.db.tables import Organization
from pqsync.domain.windows import Window
from pqsync.services.sync_all_plan import sync_all_plan

FIRST_DAY = date(2025, 8, 17)
SPANS = (1, 30, 91, 181, 270, 400)  # days, all starting on FIRST_DAY (each holds the last)


def promised(client: TestClient, seed: Seed, days: int) -> int:
    end = FIRST_DAY + timedelta(days=days - 1)
    answer = client.get(
        f"/api/partner-dashboard/organizations/{seed.orgs['own']}/sync-plan",
        params={"startDate": FIRST_DAY.isoformat(), "endDate": end.isoformat()},
        headers=seed.bearer("case_manager"),
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["startDate"], body["endDate"]) == (FIRST_DAY.isoformat(), end.isoformat())
    return int(body["maxRequests"])


def planned(pq_app: App, seed: Seed, window: Window) -> int:
    """What the dialog's service promises for a range the dialog would refuse (> 400 days),
    as `pqsync sync org` or a backfill of years would ask it."""
    settings = pq_app.settings
    with Session(pq_app.engine) as session:
        org = session.get(Organization, seed.orgs["own"])
        assert org is not None
        return sync_all_plan(
            pq_app.sync_service(),
            session,
            org,
            pq_app.budget_usage(),
            minute_limit=settings.intakeq_minute_limit,
            minute_window_seconds=settings.intakeq_minute_window_seconds,
            window=window,
        ).requests


def test_a_longer_range_never_promises_fewer_requests(
    client: TestClient, seed: Seed, pq_app: App
) -> None:
    for known in (False, True):  # the practice's size unknown, then measured by a run
        if known:
            run = pq_app.sync_service().sync_organization("first-step-house")
            assert run.status == "success"
        estimates = [promised(client, seed, days) for days in SPANS]
        assert estimates == sorted(estimates), (known, estimates)
        assert estimates[-1] > estimates[0], (known, estimates)
        eleven_years = planned(pq_app, seed, Window(date(2014, 11, 15), date(2025, 11, 15)))
        # Years of a patient's visits are more than one page each: well past the 400 days.
        assert eleven_years > estimates[-1] + 12, (known, eleven_years, estimates)
