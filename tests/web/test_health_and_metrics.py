"""`/healthz` and `/metrics` as monitoring reads them: workers seen, last good syncs,
runs by type and outcome, queue depth, the day's IntakeQ requests."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from web_support import METRICS_TOKEN, FakeClock, Seed, open_client

from pqsync.bootstrap import App
from pqsync.db.tables import SyncLog

METRICS_AUTH = {"Authorization": f"Bearer {METRICS_TOKEN}"}


def test_healthz_says_whether_a_worker_is_alive_and_when_each_organisation_last_synced(
    build_app: Callable[..., App], seed: Seed, clock: FakeClock
) -> None:
    app = build_app()
    with open_client(app) as client:
        before = client.get("/healthz").json()
        app.jobs.tick()  # a worker's minute: heartbeat, and the night caught up
        app.jobs.drain()
        after = client.get("/healthz").json()
        clock.advance(minutes=10)
        later = client.get("/healthz").json()

    assert before["worker"]["alive"] is False
    assert before["worker"]["lastSeenAt"] is None
    assert [o["lastSuccessfulSyncAt"] for o in before["organizations"]] == [None, None]
    assert after["worker"]["alive"] is True
    assert {o["slug"] for o in after["organizations"]} == {"first-step-house", "harbor-house"}
    assert all(o["lastSuccessfulSyncAt"] is not None for o in after["organizations"])
    assert later["worker"]["alive"] is False  # not seen for 10 minutes
    body = str(after)
    assert not [name for name in seed.names.values() if name in body]


def test_metrics_export_runs_by_type_queue_depth_and_the_days_requests(
    build_app: Callable[..., App], seed: Seed, clock: FakeClock
) -> None:
    app = build_app(INTAKEQ_DAILY_LIMIT=1000)
    with open_client(app) as client:
        never = client.get("/metrics", headers=METRICS_AUTH).text
        client.post(
            f"/api/partner-dashboard/organizations/{seed.orgs['own']}/sync-all-patients",
            headers={**seed.bearer("partner_admin"), "Prefer": "respond-async"},
        )
        queued = client.get("/metrics", headers=METRICS_AUTH).text
        app.jobs.drain()
        app.jobs.tick()
        app.jobs.drain()
        clock.advance(minutes=5)
        text = client.get("/metrics", headers=METRICS_AUTH).text
    with Session(app.engine) as session:
        sent = session.scalar(select(func.sum(SyncLog.requests_made)))

    assert "pqsync_last_nightly_success_age_seconds NaN" in never
    assert "pqsync_queue_depth 1.0" in queued
    assert "pqsync_queue_depth 0.0" in text
    assert 'pqsync_runs{status="success",type="manual_org"} 1.0' in text
    assert 'pqsync_runs{status="success",type="automated_daily"} 1.0' in text
    assert "pqsync_last_nightly_success_age_seconds 300.0" in text
    assert sent
    assert f"pqsync_intakeq_requests_used {float(sent)}" in text
    assert f"pqsync_intakeq_requests_left {float(1000 - sent)}" in text
