"""Starting syncs over HTTP: validation, conflicts, IntakeQ failures, async runs, consent,
history, the cron trigger and the webhook."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from web_support import (
    CRON_SECRET,
    METRICS_TOKEN,
    PASSWORD,
    USERS,
    WEBHOOK_TOKEN,
    FakeClock,
    Seed,
    open_client,
    unreachable_intakeq,
    wait_for_background,
)

from intakeq_sim import SimulatorServer
from pqsync.bootstrap import App
from pqsync.db.tables import Affiliation, Appointment, Organization, Patient, SyncLog
from pqsync.intakeq.models import METADATA_FIELDS
from pqsync.services.sync.deletion import RECHECK_LIMIT
from pqsync.services.sync.identity import lookup_budget

PATIENTS = "/api/partner-dashboard/patients"
CRON = "/api/cron/sync-practiceq-appointments"
WEBHOOK = "/api/webhooks/practiceq/appointments"


def org_sync_url(org_id: uuid.UUID | str) -> str:
    return f"/api/partner-dashboard/organizations/{org_id}/sync-all-patients"


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    return error


# -- input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("date_range", "message"),
    [
        (
            {"startDate": "2025-02-30", "endDate": "2025-03-01"},
            "dateRange.startDate: '2025-02-30' is not a real date in YYYY-MM-DD form",
        ),
        (
            {"startDate": "2025-12-31", "endDate": "2025-11-01"},
            "dateRange.endDate: must not be before startDate",
        ),
        (
            {"startDate": "2025-01-01", "endDate": "2026-12-31"},
            "dateRange.endDate: the range spans more than 400 days",
        ),
        (
            {"startDate": "9999-12-01", "endDate": "9999-12-31"},
            "dateRange.startDate: 9999-12-01 is outside the plausible range 2000-01-01 to "
            "2100-12-31",
        ),
        (
            {"startDate": "2025-11-01", "endDate": "2101-01-01"},
            "dateRange.endDate: 2101-01-01 is outside the plausible range",
        ),
        ({"startDate": "2025-11-01"}, "dateRange.endDate: is required"),
        ({"startDate": 20251101, "endDate": "2025-12-31"}, "dateRange.startDate: Input should"),
        ({"start": "2025-11-01", "endDate": "2025-12-31"}, "dateRange.startDate: is required"),
    ],
)
def test_it_rejects_a_bad_date_range_naming_the_field(
    module_client: TestClient, seed: Seed, date_range: dict[str, Any], message: str
) -> None:
    response = module_client.post(
        f"{PATIENTS}/{seed.consenting}/sync",
        headers=seed.bearer("case_manager"),
        json={"dateRange": date_range},
    )

    assert response.status_code == 422
    assert error_of(response)["message"].startswith(message)


def test_a_body_that_is_not_json_is_a_422_not_a_500(module_client: TestClient, seed: Seed) -> None:
    response = module_client.post(
        f"{PATIENTS}/{seed.consenting}/sync",
        headers={**seed.bearer("case_manager"), "Content-Type": "application/json"},
        content=b"{not json",
    )

    assert response.status_code == 422
    assert error_of(response) == {
        "code": "invalid_request",
        "message": "the request body is not valid JSON",
    }


@pytest.mark.parametrize(
    "url",
    [
        f"{PATIENTS}/{uuid.uuid4()}/sync",
        f"{PATIENTS}/not-a-uuid/sync",
        org_sync_url(uuid.uuid4()),
        f"{PATIENTS}/{uuid.uuid4()}/appointments",
        f"{PATIENTS}/{uuid.uuid4()}/sync-history",
        f"/api/partner-dashboard/sync-runs/{uuid.uuid4()}",
        "/api/partner-dashboard/sync-runs/nonsense",
    ],
)
def test_unknown_ids_are_404(module_client: TestClient, seed: Seed, url: str) -> None:
    method = "POST" if url.endswith(("sync", "sync-all-patients")) else "GET"

    response = module_client.request(method, url, headers=seed.bearer("staff_admin"))

    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


# -- conflicts and IntakeQ failures ------------------------------------------------------


@pytest.mark.parametrize("scope", ["patient", "organization"])
def test_a_second_sync_of_a_running_scope_is_409_with_the_run_id(
    client: TestClient, pq_app: App, seed: Seed, scope: str
) -> None:
    service = pq_app.sync_service()
    if scope == "patient":
        running = service.prepare_patient(str(seed.consenting))
        url = f"{PATIENTS}/{seed.consenting}/sync"
    else:
        running = service.prepare_organization(str(seed.orgs["own"]))
        url = org_sync_url(seed.orgs["own"])
    try:
        response = client.post(url, headers=seed.bearer("case_manager"))
        progress = client.get(response.headers["Location"], headers=seed.bearer("viewer"))
    finally:
        service.run(running)

    assert response.status_code == 409
    error = error_of(response)
    assert error["code"] == "sync_in_progress"
    assert error["runId"] == str(running.run_id)
    assert error["message"] == f"a sync of this {scope} is already running (run {running.run_id})"
    assert progress.json()["status"] == "running"
    assert progress.json()["triggeredBy"] == "command line"


def test_intakeq_unreachable_is_502(build_app: Callable[..., App], seed: Seed) -> None:
    with open_client(build_app(intakeq=unreachable_intakeq())) as client:
        response = client.post(
            f"{PATIENTS}/{seed.consenting}/sync", headers=seed.bearer("case_manager")
        )

    assert response.status_code == 502
    error = error_of(response)
    assert error["code"] == "intakeq_unreachable"
    assert "could not be reached" in error["message"]


def test_a_spent_request_budget_is_429_saying_when_it_frees_up(
    build_app: Callable[..., App], seed: Seed, clock: FakeClock
) -> None:
    unshared = {"PQSYNC_NIGHTLY_RESERVE_SHARE": 0, "PQSYNC_ORGANIZATION_BUDGET_SHARE": 1}
    with open_client(build_app(INTAKEQ_DAILY_LIMIT=1, **unshared)) as client:
        first = client.post(
            f"{PATIENTS}/{seed.consenting}/sync", headers=seed.bearer("case_manager")
        )
        clock.advance(seconds=61)  # (within the minute, the first sync's answer comes back)
        second = client.post(
            f"{PATIENTS}/{seed.consenting}/sync", headers=seed.bearer("case_manager")
        )

    assert first.status_code == 200
    assert second.status_code == 429
    error = error_of(second)
    assert error["code"] == "intakeq_budget_exhausted"
    # A day after the first request, plus the 3 s margin our windows add to IntakeQ's.
    assert "frees up at 2025-11-16T14:03:03-07:00" in error["message"]
    assert error["retryAt"] == "2025-11-16T14:03:03-07:00"
    assert second.headers["Retry-After"] == str(24 * 3600 + 3 - 61)


# -- bulk and async ------------------------------------------------------------------------


def test_bulk_sync_can_run_async_with_progress_at_its_location(
    client: TestClient, seed: Seed
) -> None:
    response = client.post(
        org_sync_url(seed.orgs["own"]),
        headers={**seed.bearer("partner_admin"), "Prefer": "respond-async"},
    )

    assert response.status_code == 202
    run_id = response.json()["runId"]
    assert response.headers["Location"] == f"/api/partner-dashboard/sync-runs/{run_id}"
    assert response.json()["patientsTotal"] == 12
    wait_for_background(client)
    progress = client.get(response.headers["Location"], headers=seed.bearer("viewer")).json()
    assert progress["status"] == "success"
    assert progress["triggeredBy"] == "Beth Rodriguez"
    assert progress["patientsTotal"] == progress["patientsDone"] == 12
    assert {p["state"] for p in progress["patients"]} == {"done"}
    # No counts for a patient without active ROI consent, in the run or in its totals.
    without_consent = {str(seed.expired), str(seed.missing)}
    summaries = {p["patientId"]: p["summary"] for p in progress["patients"]}
    assert all(summaries[p] is None for p in without_consent)
    counted = [s for p, s in summaries.items() if p not in without_consent]
    assert progress["summary"]["new"] == sum(s["new"] for s in counted) > 0


def test_bulk_sync_accepts_the_organisation_slug(client: TestClient, seed: Seed) -> None:
    response = client.post(org_sync_url("first-step-house"), headers=seed.bearer("case_manager"))

    assert response.status_code == 200
    assert response.json()["organizationId"] == str(seed.orgs["own"])


# -- ROI consent ---------------------------------------------------------------------------


def test_without_consent_a_partner_sees_the_patient_but_no_details(
    client: TestClient, seed: Seed
) -> None:
    partner = seed.bearer("case_manager")
    sync = client.post(f"{PATIENTS}/{seed.expired}/sync", headers=partner)
    roster = {p["id"]: p for p in client.get(PATIENTS, headers=partner).json()["patients"]}
    appointments = client.get(f"{PATIENTS}/{seed.expired}/appointments", headers=partner)
    staff_view = client.get(
        f"{PATIENTS}/{seed.expired}/appointments", headers=seed.bearer("staff_admin")
    )

    assert sync.status_code == 200  # the sync itself runs
    assert sync.json()["success"] is True
    assert sync.json()["summary"] is None  # not even how many appointments there are
    assert sync.json()["appointments"] == []
    for patient_id in (seed.expired, seed.missing):
        entry = roster[str(patient_id)]
        assert entry["roiConsent"]["message"] == "ROI consent required"
        assert entry["roiConsent"]["active"] is False
        assert entry["nextAppointment"] is None
    assert roster[str(seed.expired)]["lastSyncedAt"] == "2025-11-15T14:03:00-07:00"
    assert appointments.status_code == 403
    assert error_of(appointments) == {
        "code": "roi_consent_required",
        "message": "ROI consent required",
    }
    assert staff_view.status_code == 200
    assert len(staff_view.json()["appointments"]) > 0


def test_with_consent_the_roster_shows_the_next_appointment(client: TestClient, seed: Seed) -> None:
    partner = seed.bearer("viewer")
    client.post(org_sync_url(seed.orgs["own"]), headers=seed.bearer("staff_admin"))

    roster = {p["id"]: p for p in client.get(PATIENTS, headers=partner).json()["patients"]}
    appointments = client.get(f"{PATIENTS}/{seed.consenting}/appointments", headers=partner)

    entry = roster[str(seed.consenting)]
    assert entry["roiConsent"] == {
        "status": "active",
        "expiresOn": "2026-11-15",
        "active": True,
        "message": None,
    }
    upcoming = [
        a
        for a in appointments.json()["appointments"]
        if a["startTime"] >= "2025-11-15T14:03:00-07:00"
        and a["status"] not in ("cancelled", "declined", "no_show")
    ]
    assert entry["nextAppointment"] == {
        "startTime": upcoming[0]["startTime"],
        "providerName": upcoming[0]["providerName"],
        "status": upcoming[0]["status"],
    }
    assert len(roster) == 12  # First Step House only, never Harbor House's patient


def test_soft_deleted_appointments_are_left_out(
    client: TestClient, pq_app: App, seed: Seed
) -> None:
    partner = seed.bearer("partner_admin")
    synced = client.post(f"{PATIENTS}/{seed.consenting}/sync", headers=partner).json()
    gone = synced["appointments"][0]["id"]
    with Session(pq_app.engine) as session:
        session.execute(
            update(Appointment)
            .where(Appointment.id == uuid.UUID(gone))
            .values(deleted_at=pq_app.clock())
        )
        session.commit()

    listed = client.get(f"{PATIENTS}/{seed.consenting}/appointments", headers=partner).json()

    ids = {a["id"] for a in listed["appointments"]}
    assert gone not in ids
    assert len(ids) == len(synced["appointments"]) - 1


# -- who triggered: users, the schedule, the webhook ---------------------------------------


def known_client(pq_app: App) -> tuple[uuid.UUID, int]:
    with Session(pq_app.engine) as session:
        row = session.execute(
            select(Patient.id, Patient.intakeq_client_id)
            .where(Patient.intakeq_client_id.is_not(None))
            .order_by(Patient.id)
            .limit(1)
        ).one()
    return row[0], int(row[1])


def test_history_names_the_schedule_and_the_webhook(
    client: TestClient, pq_app: App, seed: Seed, clock: FakeClock
) -> None:
    patient_id, client_id = known_client(pq_app)
    nightly = client.post(CRON, headers={"Authorization": f"Bearer {CRON_SECRET}"})
    clock.advance(minutes=1)
    hook = client.post(
        f"{WEBHOOK}?token={WEBHOOK_TOKEN}",
        json={
            "EventType": "AppointmentRescheduled",
            "ActionPerformedByClient": False,
            "Appointment": {"Id": "whatever-the-sender-says", "ClientId": client_id},
            "ClientId": client_id,
            "PracticeId": "practice-1",
        },
    )
    wait_for_background(client)

    history = client.get(
        f"{PATIENTS}/{patient_id}/sync-history", headers=seed.bearer("staff_admin")
    ).json()["history"]

    assert nightly.status_code == 200, nightly.text
    assert hook.status_code == 202
    assert hook.json() == {"accepted": True}
    assert [h["triggeredBy"] for h in history] == ["PracticeQ (webhook)", "nightly schedule"]


def test_the_cron_endpoint_can_answer_at_once(client: TestClient) -> None:
    response = client.post(
        CRON, headers={"Authorization": f"Bearer {CRON_SECRET}", "Prefer": "respond-async"}
    )
    wait_for_background(client)

    assert response.status_code == 202
    assert response.json()["scope"] == "nightly"
    assert response.json()["triggeredBy"] == "nightly schedule"


@pytest.mark.parametrize("token", [None, "", "wrong", WEBHOOK_TOKEN[:-1]])
def test_the_webhook_without_its_token_does_not_exist(
    module_client: TestClient, token: str | None
) -> None:
    url = WEBHOOK if token is None else f"{WEBHOOK}?token={token}"

    response = module_client.post(url, json={"EventType": "AppointmentCreated", "ClientId": 1})

    assert response.status_code == 404


def test_a_webhook_for_an_unknown_client_is_accepted_and_ignored(
    client: TestClient, pq_app: App
) -> None:
    response = client.post(
        f"{WEBHOOK}?token={WEBHOOK_TOKEN}",
        json={"EventType": "AppointmentCreated", "ClientId": 987654321},
    )
    wait_for_background(client)

    assert response.status_code == 202
    with Session(pq_app.engine) as session:
        assert session.scalar(select(Appointment.id).limit(1)) is None


def test_a_malformed_webhook_is_422(module_client: TestClient) -> None:
    response = module_client.post(f"{WEBHOOK}?token={WEBHOOK_TOKEN}", json={"ClientId": "many"})

    assert response.status_code == 422
    assert error_of(response)["code"] == "invalid_request"


def test_metrics_count_requests_and_sync_runs(client: TestClient, seed: Seed) -> None:
    client.post(f"{PATIENTS}/{seed.consenting}/sync", headers=seed.bearer("case_manager"))

    text = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).text

    assert 'pqsync_sync_runs_total{scope="patient",status="success",trigger="user"} 1.0' in text
    assert (
        'pqsync_http_requests_total{method="POST",'
        'route="/api/partner-dashboard/patients/{patientId}/sync",status="200"} 1.0' in text
    )


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("POST", "/api/auth/login", {"email": "a\u0000b@example.org", "password": "x"}),
        ("POST", org_sync_url("first%00step"), None),
        ("GET", f"{PATIENTS}/%00/sync-history", None),
    ],
)
def test_nul_bytes_are_refused_not_a_500(
    module_client: TestClient, seed: Seed, method: str, url: str, body: dict[str, str] | None
) -> None:
    response = module_client.request(method, url, headers=seed.bearer("staff_admin"), json=body)

    assert response.status_code == 400  # refused at the door, before any route
    assert response.json()["error"]["code"] == "nul_byte"


def test_a_sync_stores_only_the_metadata_pqsync_uses(
    client: TestClient, pq_app: App, seed: Seed
) -> None:
    synced = client.post(f"{PATIENTS}/{seed.consenting}/sync", headers=seed.bearer("staff_admin"))
    assert synced.status_code == 200

    with Session(pq_app.engine) as session:
        stored = session.scalars(
            select(Appointment.extra).where(Appointment.patient_id == seed.consenting)
        ).all()

    assert stored
    assert all(metadata.keys() <= METADATA_FIELDS for metadata in stored)
    assert all(metadata.get("LocationName") for metadata in stored)  # what the page shows


def test_the_sync_all_plan_names_at_most_the_requests_the_run_then_makes(
    client: TestClient, seed: Seed, pq_app: App
) -> None:
    partner = seed.bearer("case_manager")
    plan_url = f"/api/partner-dashboard/organizations/{seed.orgs['own']}/sync-plan"

    def organisation_runs() -> dict[uuid.UUID, int]:
        with Session(pq_app.engine) as session:
            rows = session.execute(
                select(SyncLog.id, SyncLog.requests_made).where(SyncLog.sync_type == "organization")
            ).all()
        return {run_id: requests for run_id, requests in rows}

    promised, made = [], []
    for _ in range(2):  # first with the practice's size unknown, then known
        plan = client.get(plan_url, headers=partner).json()
        before = organisation_runs()
        response = client.post(org_sync_url("first-step-house"), headers=partner)
        assert response.status_code == 200
        (new_run,) = set(organisation_runs()) - set(before)
        promised.append(plan["maxRequests"])
        made.append(organisation_runs()[new_run])
    assert all(0 < m <= p for m, p in zip(made, promised, strict=True)), (made, promised)
    # Once the practice's size is known, the plan is the run's own fetch, plus the allowance
    # for questions about unknown ClientIds and for re-checks by id (none were needed here).
    with Session(pq_app.engine) as session:
        org = session.get(Organization, seed.orgs["own"])
        assert org is not None
        ids = [
            a.patient_id
            for a in session.scalars(select(Affiliation).filter_by(organization_id=org.id))
        ]
        unlearned = len(
            list(
                session.scalars(
                    select(Patient.id).where(
                        Patient.id.in_(ids), Patient.intakeq_client_id.is_(None)
                    )
                )
            )
        )
    # The fetch includes the check that PracticeQ did not change while it was read (two
    # requests in the plan; a page more when the day's changes fill one, as in this seed).
    assert made[1] <= promised[1] <= made[1] + lookup_budget(unlearned) + RECHECK_LIMIT


def test_a_partial_patient_sync_says_so_and_why(
    client: TestClient, seed: Seed, pq_app: App, simulator: SimulatorServer, clock: FakeClock
) -> None:
    partner = seed.bearer("case_manager")
    url = f"{PATIENTS}/{seed.consenting}/sync"
    first = client.post(url, headers=partner)
    assert first.status_code == 200 and first.json()["success"] is True
    with Session(pq_app.engine) as session:
        patient = session.get(Patient, seed.consenting)
        assert patient is not None
        email = patient.email
    (profile,) = [c for c in simulator.dataset.clients if c.email.lower() == email]
    moved = httpx.post(
        f"{simulator.control_url}/clients/{profile.client_id}/email",
        json={"Email": "someone.else@mail.example"},
    )
    moved.raise_for_status()
    with Session(pq_app.engine) as session:
        before = set(session.scalars(select(SyncLog.id)))
    clock.advance(seconds=61)  # (within the minute, the first sync's answer comes back)
    try:
        second = client.post(url, headers=partner)
    finally:
        httpx.post(
            f"{simulator.control_url}/clients/{profile.client_id}/email",
            json={"Email": profile.email},
        ).raise_for_status()

    assert second.status_code == 200
    assert second.json()["success"] is False
    with Session(pq_app.engine) as session:
        (run_id,) = set(session.scalars(select(SyncLog.id))) - before
    run = client.get(f"/api/partner-dashboard/sync-runs/{run_id}", headers=partner).json()
    assert run["status"] == "partial"
    assert any("returned none of this patient's appointments" in r for r in run["incomplete"])
    (mine,) = run["patients"]
    assert mine["incomplete"]
    # The pages say it too: the patient's history, and the staff page of the run.
    form = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token is not None
    signed_in = client.post(
        "/login",
        data={"email": USERS["staff_admin"], "password": PASSWORD, "csrf_token": token.group(1)},
        follow_redirects=False,
    )
    assert signed_in.status_code == 303
    page = client.get(f"/patients/{seed.consenting}")
    assert "Synced from PracticeQ with gaps: IntakeQ returned none" in page.text
    staff = client.get(f"/staff/runs/{run_id}")
    assert "Why this run is partial" in staff.text
    assert "returned none of this patient&#39;s appointments" in staff.text
