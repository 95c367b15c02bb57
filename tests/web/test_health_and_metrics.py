"""`/healthz` and `/metrics` as monitoring reads them: workers seen, last good syncs,
runs by type and outcome, queue depth, the day's IntakeQ requests."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from web_support import METRICS_TOKEN, FakeClock, Seed, open_client

from pqsync.bootstrap import App
from pqsync.db.tables import SyncLog

METRICS_AUTH = {"Authorization": f"Bearer {METRICS_TOKEN}"}


def test_healthz_is_503_without_a_worker_and_tells_details_only_to_staff_or_monitoring(
    build_app: Callable[..., App], seed: Seed, clock: FakeClock
) -> None:
    app = build_app()
    with open_client(app) as client:
        never = client.get("/healthz")
        app.jobs.tick()  # a worker's minute: heartbeat, and the night caught up
        app.jobs.drain()
        public = client.get("/healthz")
        detailed = client.get("/healthz", headers=METRICS_AUTH)
        staff = client.get("/healthz", headers=seed.bearer("staff_admin"))
        partner = client.get("/healthz", headers=seed.bearer("partner_admin"))
        clock.advance(minutes=2, seconds=1)  # the worker died after that tick
        dead = client.get("/healthz")
        dead_details = client.get("/healthz", headers=METRICS_AUTH).json()

    assert (never.status_code, never.json()) == (503, {"status": "down"})
    assert (public.status_code, public.json()) == (200, {"status": "ok"})
    assert partner.json() == {"status": "ok"}  # a partner is not told about other partners
    assert (dead.status_code, dead.json()) == (503, {"status": "down"})
    for answer in (detailed.json(), staff.json()):
        assert answer["worker"]["alive"] is True
        assert {o["slug"] for o in answer["organizations"]} == {"first-step-house", "harbor-house"}
        assert all(o["lastSuccessfulSyncAt"] is not None for o in answer["organizations"])
        assert answer["queueDepth"] == 0
    assert dead_details["worker"]["alive"] is False
    assert dead_details["worker"]["lastSeenAt"] is not None
    body = str(detailed.json())
    assert not [name for name in seed.names.values() if name in body]


def test_a_worker_whose_tick_fails_makes_healthz_down(
    build_app: Callable[..., App], clock: FakeClock
) -> None:
    app = build_app()
    app.jobs.tick()
    with app.engine.begin() as conn:  # the tick breaks from now on (here: a damaged table)
        conn.execute(text("ALTER TABLE nightly_claims RENAME TO nightly_claims_gone"))
    try:
        for _ in range(3):
            clock.advance(minutes=1)
            with contextlib.suppress(SQLAlchemyError):
                app.jobs.tick()
        with open_client(app) as client:
            answer = client.get("/healthz")
            metrics = client.get("/metrics", headers=METRICS_AUTH).text
    finally:
        with app.engine.begin() as conn:
            conn.execute(text("ALTER TABLE nightly_claims_gone RENAME TO nightly_claims"))

    assert (answer.status_code, answer.json()) == (503, {"status": "down"})
    assert "pqsync_worker_last_heartbeat_age_seconds 180.0" in metrics


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
