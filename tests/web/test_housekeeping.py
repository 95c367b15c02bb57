"""Pruning on the schedule: expired sessions, old login attempts and request-budget rows go;
sync logs stay unless a retention is set; the change history has its own (default: kept)."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from web_support import PASSWORD, USERS, FakeClock, Seed, open_client

from pqsync.bootstrap import App
from pqsync.db.tables import (
    IntakeQRequest,
    LoginAttempt,
    PatientActivity,
    SyncLog,
    UserSession,
)

TABLES = {
    "sessions": UserSession,
    "login attempts": LoginAttempt,
    "request log": IntakeQRequest,
    "sync logs": SyncLog,
    "activity": PatientActivity,
}


def counts(app: App) -> dict[str, int]:
    with Session(app.engine) as session:
        return {
            name: int(session.scalar(select(func.count()).select_from(table)) or 0)
            for name, table in TABLES.items()
        }


def use_the_app(app: App, seed: Seed) -> None:
    with open_client(app) as client:
        login = client.post(
            "/api/auth/login", json={"email": USERS["viewer"], "password": PASSWORD}
        )
        assert login.status_code == 200, login.text
        client.post(
            f"/api/partner-dashboard/patients/{seed.consenting}/sync",
            headers=seed.bearer("case_manager"),
        )


def test_a_tick_prunes_what_outlived_its_window_and_keeps_the_logs(
    build_app: Callable[..., App], seed: Seed, clock: FakeClock
) -> None:
    app = build_app()
    use_the_app(app, seed)
    app.jobs.tick()
    app.jobs.drain()
    fresh = counts(app)
    assert all(fresh.values()), fresh

    clock.advance(days=10)
    app.jobs.tick()
    left = counts(app)

    assert (left["sessions"], left["login attempts"], left["request log"]) == (0, 0, 0)
    # The logs are kept (no retention set); the tick started tonight's run besides.
    assert left["sync logs"] == fresh["sync logs"] + 1
    assert left["activity"] == fresh["activity"]


def test_log_retention_prunes_old_sync_logs_and_keeps_the_change_history(
    build_app: Callable[..., App], seed: Seed, clock: FakeClock
) -> None:
    app = build_app(PQSYNC_LOG_RETENTION_DAYS=7)
    use_the_app(app, seed)
    before = counts(app)
    assert before["activity"] > 0

    clock.advance(days=8)
    app.jobs.tick()
    left = counts(app)

    # The change history is a record, not a log: log retention leaves it whole.
    assert left["activity"] == before["activity"]
    assert left["sync logs"] == 1  # only tonight's run, just started


def test_the_change_history_has_its_own_retention(
    build_app: Callable[..., App], seed: Seed, clock: FakeClock
) -> None:
    app = build_app(PQSYNC_LOG_RETENTION_DAYS=7, PQSYNC_CHANGE_HISTORY_RETENTION_DAYS=30)
    use_the_app(app, seed)
    clock.advance(days=8)
    app.jobs.tick()
    assert counts(app)["activity"] > 0

    clock.advance(days=23)
    app.jobs.tick()
    assert counts(app)["activity"] == 0
