"""The queue as the web app and its workers use it: the schedule's ticks, the cron
endpoint's idempotency, a paused run rescheduled, stale runs closed."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session
from web_support import CRON_SECRET, FakeClock, Seed, open_client

from pqsync.bootstrap import App
from pqsync.db.tables import Alert, Organization, SyncLock, SyncLog

CRON = "/api/cron/sync-practiceq-appointments"


def runs(app: App) -> list[SyncLog]:
    with Session(app.engine) as session:
        return list(session.scalars(select(SyncLog).order_by(SyncLog.started_at)))


def test_two_workers_ticking_start_one_nightly_run_and_the_cron_call_answers_with_it(
    build_app: Callable[..., App], tmp_path: object
) -> None:
    first = build_app(PQSYNC_QUEUE_URL=f"sqlite:///{tmp_path}/shared-queue.db")
    second = build_app(PQSYNC_QUEUE_URL=f"sqlite:///{tmp_path}/shared-queue.db")

    first.jobs.tick()
    second.jobs.tick()
    assert first.jobs.pending() == 1
    second.jobs.drain()
    first.jobs.tick()
    second.jobs.tick()

    nightly = [r for r in runs(first) if r.run_type == "automated_daily"]
    assert [(r.sync_type, r.status) for r in nightly] == [("nightly", "success")]
    assert first.jobs.pending() == 0
    with open_client(first) as client:
        again = client.post(CRON, headers={"Authorization": f"Bearer {CRON_SECRET}"})
    assert again.status_code == 200, again.text
    assert again.json()["alreadyRan"] is True
    assert again.json()["runId"] == str(nightly[0].id)
    assert len(runs(first)) == 1


def test_each_zone_gets_its_night_at_its_own_0300(
    build_app: Callable[..., App], clock: FakeClock
) -> None:
    app = build_app()
    app.jobs.tick()
    app.jobs.drain()  # today's (15 Nov) nights, caught up
    # 16 Nov: 03:00 in New York (Harbor House) is 08:00 UTC; in Denver (First Step) 10:00 UTC.
    clock.now = datetime(2025, 11, 16, 7, 59, tzinfo=UTC)
    app.jobs.tick()
    assert app.jobs.pending() == 0
    clock.now = datetime(2025, 11, 16, 8, 0, tzinfo=UTC)
    app.jobs.tick()
    assert app.jobs.pending() == 1
    app.jobs.drain()
    clock.now = datetime(2025, 11, 16, 9, 59, tzinfo=UTC)
    app.jobs.tick()
    assert app.jobs.pending() == 0
    clock.now = datetime(2025, 11, 16, 10, 0, tzinfo=UTC)
    app.jobs.tick()
    app.jobs.drain()

    started = [r.started_at for r in runs(app) if r.run_type == "automated_daily"]
    assert started[1:] == [
        datetime(2025, 11, 16, 8, 0, tzinfo=UTC),
        datetime(2025, 11, 16, 10, 0, tzinfo=UTC),
    ]


def test_a_run_whose_worker_died_is_closed_as_failed_and_its_scope_freed(
    build_app: Callable[..., App], seed: Seed, clock: FakeClock
) -> None:
    app = build_app()
    service = app.sync_service()
    prepared = service.prepare_organization(str(seed.orgs["own"]))
    # The worker dies here: nobody renews the lease. It expires; the next tick closes the run.
    with Session(app.engine) as session:
        session.execute(
            update(SyncLock)
            .where(SyncLock.run_id == prepared.run_id)
            .values(expires_at=clock.now - timedelta(seconds=1))
        )
        session.commit()
    app.jobs.tick()

    with Session(app.engine) as session:
        row = session.get(SyncLog, prepared.run_id)
        assert row is not None
        assert (row.status, row.error_message) == ("failed", "worker stopped")
    again = service.sync_organization(str(seed.orgs["own"]))
    assert again.status == "success"


def test_a_run_that_spends_the_days_budget_is_paused_and_the_same_run_resumes(
    build_app: Callable[..., App], seed: Seed, clock: FakeClock
) -> None:
    # No reserve, no organisation cap: the run itself meets the spent day.
    app = build_app(
        INTAKEQ_DAILY_LIMIT=1, PQSYNC_NIGHTLY_RESERVE_SHARE=0, PQSYNC_ORGANIZATION_BUDGET_SHARE=1
    )
    org_url = f"/api/partner-dashboard/organizations/{seed.orgs['own']}/sync-all-patients"
    with open_client(app) as client:
        client.post(
            f"/api/partner-dashboard/patients/{seed.consenting}/sync",
            headers=seed.bearer("case_manager"),
        )
        response = client.post(
            org_url, headers={**seed.bearer("partner_admin"), "Prefer": "respond-async"}
        )
        run_id = uuid.UUID(response.json()["runId"])
        app.jobs.drain()
        progress = client.get(
            f"/api/partner-dashboard/sync-runs/{run_id}", headers=seed.bearer("partner_admin")
        ).json()
        again = client.post(org_url, headers=seed.bearer("partner_admin"))

    assert progress["status"] == "paused"
    # The resume moment with its date, in the organisation's zone (Denver).
    assert progress["error"] == (
        "paused: the day's IntakeQ requests are used up; resumes at 2025-11-16 14:03 MST"
    )
    # Pressing Sync again starts nothing: the paused run is named, with when it resumes.
    assert again.status_code == 429
    assert again.json()["error"]["runId"] == str(run_id)
    assert again.json()["error"]["retryAt"] == "2025-11-16T14:03:03-07:00"
    app.jobs.tick()
    app.jobs.drain()
    assert [r.status for r in runs(app) if r.sync_type == "organization"] == ["paused"]

    clock.advance(days=1, seconds=5)
    later = build_app(INTAKEQ_DAILY_LIMIT=1000)  # a worker of the next day
    later.jobs.tick()
    later.jobs.drain()

    organization_runs = [r for r in runs(app) if r.sync_type == "organization"]
    assert [(r.id, r.status) for r in organization_runs] == [(run_id, "success")]


def test_a_night_not_run_by_0600_local_is_one_alert_per_organisation_then_caught_up(
    build_app: Callable[..., App], clock: FakeClock
) -> None:
    app = build_app()  # 14:03 in Denver, 16:03 in New York: no worker ran last night
    with app.engine.begin() as conn:  # installed two days ago
        conn.execute(update(Organization).values(created_at=clock.now - timedelta(days=2)))
    app.jobs.tick()
    clock.advance(minutes=1)
    app.jobs.tick()
    app.jobs.drain()

    with Session(app.engine) as session:
        alerts = list(session.scalars(select(Alert).order_by(Alert.subject)))
    assert [(a.kind, a.subject) for a in alerts] == [
        ("missed", "pqsync: the nightly sync did not run for First Step House on 2025-11-15"),
        ("missed", "pqsync: the nightly sync did not run for Harbor House on 2025-11-15"),
    ]
    nightly = [r for r in runs(app) if r.run_type == "automated_daily"]
    assert [r.status for r in nightly] == ["success"]


def test_a_fresh_install_alerts_only_for_nights_due_since_it(
    build_app: Callable[..., App], clock: FakeClock
) -> None:
    app = build_app()
    with app.engine.begin() as conn:  # installed at 13:00 Denver, after its 03:00 and 06:00
        conn.execute(update(Organization).values(created_at=clock.now - timedelta(hours=1)))
    app.jobs.tick()
    app.jobs.drain()
    assert [a.kind for a in alerts_of(app)] == []

    # No worker that night: next day at 06:30 the missed night is one alert per organisation.
    clock.advance(hours=16, minutes=30)  # 06:33 in Denver, 08:33 in New York
    app.jobs.huey.flush()  # the worker of the first day is gone, its queue with it
    app.jobs.tick()
    missed = [a.subject for a in alerts_of(app) if a.kind == "missed"]
    assert missed == [
        "pqsync: the nightly sync did not run for First Step House on 2025-11-16",
        "pqsync: the nightly sync did not run for Harbor House on 2025-11-16",
    ]


def alerts_of(app: App) -> list[Alert]:
    with Session(app.engine) as session:
        return list(session.scalars(select(Alert).order_by(Alert.subject)))


def test_a_nightly_run_whose_worker_dies_is_run_again_the_same_day_and_alerts_once(
    build_app: Callable[..., App], clock: FakeClock
) -> None:
    app = build_app()
    app.jobs.tick()  # claims today's night and queues its run
    [nightly] = [r for r in runs(app) if r.run_type == "automated_daily"]
    app.jobs.huey.flush()  # the worker is SIGKILLed with the run in hand: nobody renews it
    with Session(app.engine) as session:
        session.execute(
            update(SyncLock)
            .where(SyncLock.run_id == nightly.id)
            .values(expires_at=clock.now - timedelta(seconds=1))
        )
        session.commit()

    clock.advance(minutes=1)
    app.jobs.tick()  # closes the dead run (one alert) and runs the night again
    app.jobs.drain()
    clock.advance(minutes=1)
    app.jobs.tick()
    app.jobs.drain()

    nights = [r for r in runs(app) if r.run_type == "automated_daily"]
    assert [(r.id == nightly.id, r.status) for r in nights] == [
        (True, "failed"),
        (False, "success"),
    ]
    assert [a.kind for a in alerts_of(app) if a.kind == "failure"] == ["failure"]
