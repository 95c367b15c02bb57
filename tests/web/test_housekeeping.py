"""Pruning on the schedule: expired sessions, old failed login attempts and request-budget
rows go; sync logs stay unless a retention is set; the change history, the access record and
the login history stay at least six years whatever the setting."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from web_support import PASSWORD, USERS, FakeClock, Seed, open_client

from pqsync.bootstrap import App
from pqsync.db.tables import (
    IntakeQRequest,
    LoginAttempt,
    PatientAccess,
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
    "access": PatientAccess,
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
        wrong = client.post("/api/auth/login", json={"email": USERS["viewer"], "password": "x"})
        assert wrong.status_code == 401
        roster = client.get("/api/partner-dashboard/patients")
        assert roster.status_code == 200
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

    assert (left["sessions"], left["request log"]) == (0, 0)
    # The failed login goes, the successful one is the login history and stays.
    assert (fresh["login attempts"], left["login attempts"]) == (2, 1)
    # The logs are kept (no retention set); the tick started tonight's run besides.
    assert left["sync logs"] == fresh["sync logs"] + 1
    assert left["activity"] == fresh["activity"]
    assert left["access"] == fresh["access"]


def test_no_retention_setting_prunes_the_change_history_or_access_record_under_six_years(
    build_app: Callable[..., App], seed: Seed, clock: FakeClock
) -> None:
    app = build_app(PQSYNC_LOG_RETENTION_DAYS=7)
    use_the_app(app, seed)
    fresh = counts(app)
    assert fresh["activity"] > 0 and fresh["access"] > 0

    clock.advance(days=8)
    app.jobs.tick()
    after_a_week = counts(app)
    clock.advance(days=5 * 365)
    app.jobs.tick()
    after_five_years = counts(app)

    assert after_a_week["sync logs"] == 1  # only tonight's run, just started
    assert after_a_week["activity"] == fresh["activity"]
    assert after_five_years["activity"] == fresh["activity"]
    assert after_five_years["access"] == fresh["access"]
    assert after_five_years["login attempts"] >= 1  # the successful login
