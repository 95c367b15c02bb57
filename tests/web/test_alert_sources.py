"""Every failure alerts, whatever noticed it (a worker's tick, a web request) and whatever
caused it (IntakeQ, the database, a dead worker, no worker at all)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import select, text
from sqlalchemy.orm import Session
from web_support import FakeClock, Seed, open_client

from pqsync.bootstrap import App
from pqsync.db.tables import Alert, SyncLog


def alerts(app: App) -> list[Alert]:
    with Session(app.engine) as session:
        return list(session.scalars(select(Alert).order_by(Alert.created_at)))


def org_url(seed: Seed) -> str:
    return f"/api/partner-dashboard/organizations/{seed.orgs['own']}/sync-all-patients"


def test_a_run_no_worker_took_alerts_when_a_web_request_closes_it_and_says_so(
    build_app: Callable[..., App], seed: Seed, clock: FakeClock
) -> None:
    app = build_app()
    with open_client(app) as client:
        first = client.post(
            org_url(seed), headers={**seed.bearer("partner_admin"), "Prefer": "respond-async"}
        )
        assert first.status_code == 202
        # No worker runs: the queued run waits out its hold; then someone presses Sync again.
        clock.advance(minutes=11)
        second = client.post(
            org_url(seed), headers={**seed.bearer("partner_admin"), "Prefer": "respond-async"}
        )
    assert second.status_code == 202

    with Session(app.engine) as session:
        dropped = session.get(SyncLog, uuid.UUID(first.json()["runId"]))
        assert dropped is not None
        assert dropped.status == "failed"
        assert dropped.error_message is not None
        assert "no worker" in dropped.error_message
    raised = alerts(app)
    assert [a.kind for a in raised] == ["failure"]
    assert "No pqsync worker took the run" in raised[0].body
    assert "crashed" not in raised[0].body


def test_a_run_that_fails_on_a_database_error_alerts(
    build_app: Callable[..., App], seed: Seed
) -> None:
    app = build_app()
    with app.engine.begin() as conn:  # the database breaks under the run
        conn.execute(text("ALTER TABLE patient_activity_log RENAME TO activity_gone"))
    try:
        with open_client(app, raise_server_exceptions=False) as client:
            response = client.post(org_url(seed), headers=seed.bearer("partner_admin"))
    finally:
        with app.engine.begin() as conn:
            conn.execute(text("ALTER TABLE activity_gone RENAME TO patient_activity_log"))

    assert response.status_code == 500
    raised = alerts(app)
    assert [a.kind for a in raised] == ["failure"]
    assert "The database failed" in raised[0].body


def test_a_run_whose_worker_died_alerts_when_a_web_request_closes_it(
    build_app: Callable[..., App], seed: Seed, clock: FakeClock
) -> None:
    app = build_app()
    service = app.sync_service()
    prepared = service.prepare_organization(str(seed.orgs["own"]))
    with service.locks.keep(prepared.scope_key, prepared.run_id):
        pass  # a worker took the run up, then died: nobody renews its lease any more
    clock.advance(seconds=app.settings.run_lease_seconds + 1)
    with open_client(app) as client:
        again = client.post(
            org_url(seed), headers={**seed.bearer("partner_admin"), "Prefer": "respond-async"}
        )
    assert again.status_code == 202

    raised = alerts(app)
    assert [a.kind for a in raised] == ["failure"]
    assert "stopped (crashed or was killed)" in raised[0].body
    assert clock.now - raised[0].created_at < timedelta(seconds=1)


def test_with_no_worker_the_api_says_the_sync_is_waiting_for_one(
    build_app: Callable[..., App], seed: Seed
) -> None:
    app = build_app()
    with open_client(app) as client:
        accepted = client.post(
            org_url(seed), headers={**seed.bearer("partner_admin"), "Prefer": "respond-async"}
        )
        progress = client.get(accepted.headers["Location"], headers=seed.bearer("partner_admin"))
        app.jobs.tick()  # a worker comes
        seen = client.get(accepted.headers["Location"], headers=seed.bearer("partner_admin"))

    for answer in (accepted.json(), progress.json()):
        assert answer["status"] == "running"
        assert answer["waiting"] == (
            "waiting for a worker: no pqsync worker is running; the sync starts when one does"
        )
    assert "waiting" not in seen.json() or seen.json()["waiting"] is None
