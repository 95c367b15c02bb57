"""Fair shares of the day's IntakeQ requests: one user's loop stops at their organisation's
cap while another organisation's sync still runs; the reserve keeps the nightly run's part;
the answer says when the person may sync again; the staff page shows use by organisation."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from web_support import PASSWORD, USERS, FakeClock, Seed, open_client

from pqsync.bootstrap import App


def test_one_users_loop_stops_at_its_cap_while_another_organisation_still_syncs(
    build_app: Callable[..., App], seed: Seed, clock: FakeClock
) -> None:
    # 100 requests a day; each organisation's people may spend a fifth of them.
    app = build_app(INTAKEQ_DAILY_LIMIT=100, PQSYNC_ORGANIZATION_BUDGET_SHARE=0.2)
    with open_client(app) as client:
        answers = []
        for _ in range(40):  # a case manager's script syncing one patient, once a minute
            clock.advance(seconds=61)  # (more often, it gets the last sync back for free)
            answer = client.post(
                f"/api/partner-dashboard/patients/{seed.consenting}/sync",
                headers=seed.bearer("case_manager"),
            )
            answers.append(answer)
            if answer.status_code != 200:
                break
        other = client.post(
            f"/api/partner-dashboard/organizations/{seed.orgs['other']}/sync-all-patients",
            headers=seed.bearer("other_org_admin"),
        )
        usage = app.budget_usage()
        client.post("/api/auth/login", json={"email": USERS["staff_admin"], "password": PASSWORD})
        page = client.get("/staff/runs")

    stopped = answers[-1]
    assert stopped.status_code == 429
    error = stopped.json()["error"]
    assert error["code"] == "organization_share_used"
    assert "you may sync again at 2025-11-16T14:04" in error["message"]
    assert stopped.headers["Retry-After"]
    assert 1 < len(answers) <= 21  # at most its 20 requests
    assert usage.day_used <= 100
    assert other.status_code == 200, other.text
    assert "First Step House" in page.text and "of 20" in page.text


def test_the_nightly_reserve_is_not_for_syncs_people_start(
    build_app: Callable[..., App], seed: Seed, clock: FakeClock
) -> None:
    app = build_app(
        INTAKEQ_DAILY_LIMIT=10,
        PQSYNC_NIGHTLY_RESERVE_SHARE=0.5,
        PQSYNC_ORGANIZATION_BUDGET_SHARE=1,
    )
    with open_client(app) as client:
        codes = []
        for _ in range(12):
            clock.advance(seconds=61)
            answer = client.post(
                f"/api/partner-dashboard/patients/{seed.consenting}/sync",
                headers=seed.bearer("case_manager"),
            )
            codes.append(answer.status_code)
            if answer.status_code != 200:
                break
        refused = answer.json()["error"]

    assert codes[-1] == 429
    assert refused["code"] == "intakeq_reserve_reached"
    assert app.budget_usage().day_used <= 5  # half the day stays for the nightly run


def test_a_patient_synced_a_minute_ago_answers_with_that_sync_and_costs_nothing(
    build_app: Callable[..., App], seed: Seed, clock: FakeClock
) -> None:
    app = build_app()
    url = f"/api/partner-dashboard/patients/{seed.consenting}/sync"
    with open_client(app) as client:
        first = client.post(url, headers=seed.bearer("case_manager"))
        spent = app.budget_usage().day_used
        clock.advance(seconds=30)
        again = client.post(url, headers=seed.bearer("partner_admin"))
        still = app.budget_usage().day_used
        clock.advance(seconds=60)
        later = client.post(url, headers=seed.bearer("case_manager"))

    assert first.status_code == again.status_code == later.status_code == 200
    assert spent > 0
    assert still == spent  # the second answer cost no IntakeQ request
    assert again.json()["syncedAt"] == first.json()["syncedAt"]
    assert again.json()["summary"] == first.json()["summary"]
    shown = {(a["pqAppointmentId"], a["syncAction"]) for a in again.json()["appointments"]}
    assert shown == {
        (a["pqAppointmentId"], a["syncAction"])
        for a in first.json()["appointments"]
        if a["syncAction"] != "deleted"
    }
    assert later.json()["syncedAt"] != first.json()["syncedAt"]
    assert app.budget_usage().day_used > spent


def test_one_users_loop_over_different_patients_stops_at_the_users_rate(
    build_app: Callable[..., App], seed: Seed, clock: FakeClock
) -> None:
    # No organisation cap to hide behind: only the person's own rate (5 syncs an hour).
    app = build_app(
        INTAKEQ_DAILY_LIMIT=10_000,
        PQSYNC_ORGANIZATION_BUDGET_SHARE=1,
        PQSYNC_USER_SYNCS_PER_HOUR=5,
    )
    patients = [seed.consenting, seed.expired, seed.missing]
    with open_client(app) as client:
        answers = []
        for turn in range(12):  # a script syncing the roster round and round
            clock.advance(seconds=21)  # each patient comes round again after 63 s: not cached
            patient = patients[turn % len(patients)]
            answer = client.post(
                f"/api/partner-dashboard/patients/{patient}/sync",
                headers=seed.bearer("case_manager"),
            )
            answers.append(answer)
            if answer.status_code != 200:
                break
        colleague = client.post(
            f"/api/partner-dashboard/patients/{seed.consenting}/sync",
            headers=seed.bearer("partner_admin"),
            json={"dateRange": {"startDate": "2025-11-01", "endDate": "2025-12-31"}},
        )
        other = client.post(
            f"/api/partner-dashboard/organizations/{seed.orgs['other']}/sync-all-patients",
            headers=seed.bearer("other_org_admin"),
        )
        clock.advance(hours=1)
        later = client.post(
            f"/api/partner-dashboard/patients/{seed.missing}/sync",
            headers=seed.bearer("case_manager"),
        )

    assert [a.status_code for a in answers] == [200] * 5 + [429]
    error = answers[-1].json()["error"]
    assert error["code"] == "user_rate_reached"
    assert "5 syncs an hour" in error["message"]
    first_sync = datetime.fromisoformat(answers[0].json()["syncedAt"])
    may_sync = datetime.fromisoformat(error["retryAt"])
    assert first_sync + timedelta(hours=1) - may_sync < timedelta(seconds=5)
    assert f"you may sync again at {error['retryAt']}" in error["message"]
    assert 0 < int(answers[-1].headers["Retry-After"]) <= 3600
    assert colleague.status_code == 200, colleague.text  # the same organisation's other people
    assert other.status_code == 200, other.text  # and other organisations are not held up
    assert later.status_code == 200, later.text  # an hour on, the person syncs again
