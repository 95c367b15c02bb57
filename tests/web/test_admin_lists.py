"""The staff's run list (filtered by type and outcome) and alert list."""

from __future__ import annotations

from collections.abc import Callable

from web_support import Seed, open_client, unreachable_intakeq

from pqsync.bootstrap import App

RUNS = "/api/admin/sync-runs"


def test_the_run_list_records_type_trigger_counts_and_filters_on_type_and_status(
    build_app: Callable[..., App], seed: Seed
) -> None:
    app = build_app()
    with open_client(app) as client:
        client.post(
            f"/api/partner-dashboard/patients/{seed.consenting}/sync",
            headers=seed.bearer("case_manager"),
        )
        client.post(
            f"/api/partner-dashboard/organizations/{seed.orgs['own']}/sync-all-patients",
            headers=seed.bearer("partner_admin"),
        )
        app.jobs.tick()
        app.jobs.drain()
        staff = seed.bearer("staff_admin")
        every = client.get(RUNS, headers=staff).json()["runs"]
        org_runs = client.get(f"{RUNS}?type=manual_org", headers=staff).json()["runs"]
        failed = client.get(f"{RUNS}?status=failed", headers=staff).json()["runs"]
        bad = client.get(f"{RUNS}?type=weekly", headers=staff)

    # The test's clock stands still: all three started at the same moment, in any order.
    assert sorted(r["type"] for r in every) == ["automated_daily", "manual_org", "manual_patient"]
    assert [(r["triggeredBy"], r["organizationName"]) for r in org_runs] == [
        ("Beth Rodriguez", "First Step House")
    ]
    assert org_runs[0]["new"] > 0
    assert org_runs[0]["durationSeconds"] is not None
    assert org_runs[0]["requestsMade"] > 0
    assert failed == []
    assert bad.status_code == 422


def test_the_alert_list_shows_a_failure_that_was_only_logged(
    build_app: Callable[..., App], seed: Seed
) -> None:
    broken = build_app(intakeq=unreachable_intakeq())
    with open_client(broken) as client:
        client.post(
            f"/api/partner-dashboard/organizations/{seed.orgs['own']}/sync-all-patients",
            headers=seed.bearer("partner_admin"),
        )
        alerts = client.get("/api/admin/alerts", headers=seed.bearer("staff_admin")).json()
        runs = client.get(f"{RUNS}?status=failed", headers=seed.bearer("staff_admin")).json()

    assert [(a["kind"], a["delivery"]) for a in alerts["alerts"]] == [("failure", "log")]
    assert alerts["alerts"][0]["runId"] == runs["runs"][0]["runId"]
    assert "IntakeQ could not be reached" in alerts["alerts"][0]["body"]
