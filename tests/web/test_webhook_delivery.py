"""What happens to an accepted webhook (issue 26): events naming nothing of ours cost no
IntakeQ request and none of the webhook share, so a flood of them leaves a real cancellation
to be re-fetched at once; an event meeting its patient's running sync is processed after that
run; the staff page shows the webhook budget. Each test has its own simulator: they change
its appointments."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from web_support import (
    INTAKEQ_KEY,
    METRICS_TOKEN,
    TODAY,
    WEBHOOK_TOKEN,
    FakeClock,
    Seed,
    intakeq_for,
    open_client,
    sign_in_form,
    wait_for_background,
)

from intakeq_sim import SimConfig, SimulatorServer
from pqsync.bootstrap import App
from pqsync.db.tables import Appointment, SyncLog, WebhookEvent
from pqsync.services.sync import Actor

WEBHOOK = f"/api/webhooks/practiceq/appointments?token={WEBHOOK_TOKEN}"
METRICS_AUTH = {"Authorization": f"Bearer {METRICS_TOKEN}"}
FLOOD = 1000


@pytest.fixture
def own_sim() -> Iterator[SimulatorServer]:
    config = SimConfig(minute_limit=None, daily_limit=None)
    with SimulatorServer(port=0, seed=1, today=TODAY, api_key=INTAKEQ_KEY, config=config) as sim:
        yield sim


@pytest.fixture
def make_app(build_app: Callable[..., App], own_sim: SimulatorServer) -> Callable[..., App]:
    def make(**settings: Any) -> App:
        return build_app(intakeq_for(own_sim), **settings)

    return make


def sync_organization(client: TestClient, seed: Seed) -> None:
    synced = client.post(
        f"/api/partner-dashboard/organizations/{seed.orgs['own']}/sync-all-patients",
        headers=seed.bearer("partner_admin"),
    )
    assert synced.status_code == 200, synced.text


def a_live_appointment(app: App, sim: SimulatorServer, patient: uuid.UUID) -> str:
    with Session(app.engine) as session:
        ids = session.scalars(
            select(Appointment.pq_appointment_id).where(Appointment.patient_id == patient)
        )
        live = {a["Id"] for a in sim.app.store.snapshot(include_deleted=False)}
        return next(i for i in ids if i in live and sim.app.store.get(i)["Status"] != "Canceled")


def event(kind: str, appointment: dict[str, Any]) -> dict[str, Any]:
    return {
        "EventType": kind,
        "ActionPerformedByClient": False,
        "Appointment": appointment,
        "ClientId": appointment.get("ClientId"),
        "PracticeId": "p-1",
    }


def status_seen(client: TestClient, seed: Seed, patient: uuid.UUID, ident: str) -> str:
    shown = client.get(
        f"/api/partner-dashboard/patients/{patient}/appointments",
        headers=seed.bearer("case_manager"),
    )
    assert shown.status_code == 200, shown.text
    body = shown.json()
    rows = body["appointments"] if isinstance(body, dict) else body
    return str(next(r["status"] for r in rows if r["pqAppointmentId"] == ident))


def webhook_requests(app: App) -> int:
    with Session(app.engine) as session:
        return int(
            session.scalar(
                select(func.coalesce(func.sum(SyncLog.requests_made), 0)).where(
                    SyncLog.run_type == "webhook"
                )
            )
            or 0
        )


def test_a_flood_naming_unknown_ids_leaves_a_real_cancellation_its_share(
    make_app: Callable[..., App], own_sim: SimulatorServer, seed: Seed
) -> None:
    # A share of 10 requests a day (20% of 50): the old gate spent it on the first 10 fakes.
    app = make_app(INTAKEQ_DAILY_LIMIT=50, PQSYNC_WEBHOOK_COALESCE_SECONDS=0)
    with open_client(app) as client:
        sync_organization(client, seed)
        statuses = set()
        for n in range(FLOOD):
            made_up = {
                "Id": f"made-up-{n}",
                "ClientId": 900_000 + n,
                "ClientEmail": f"nobody{n}@example.invalid",
            }
            statuses.add(
                client.post(WEBHOOK, json=event("AppointmentCanceled", made_up)).status_code
            )
        wait_for_background(client)
        assert statuses == {202}
        assert webhook_requests(app) == 0

        ident = a_live_appointment(app, own_sim, seed.consenting)
        cancelled = own_sim.app.store.cancel(ident, "provider ill")
        assert client.post(WEBHOOK, json=event("AppointmentCanceled", cancelled)).status_code == 202
        wait_for_background(client)

        assert status_seen(client, seed, seed.consenting, ident) == "cancelled"
        metrics = client.get("/metrics", headers=METRICS_AUTH).text
        sign_in_form(client, "staff_admin")
        staff_page = client.get("/staff/runs").text
    assert webhook_requests(app) == 1
    assert f'pqsync_webhook_events{{outcome="ignored"}} {float(FLOOD)}' in metrics
    assert 'pqsync_webhook_events{outcome="limited"} 0.0' in metrics
    assert "Webhooks may use <strong>10</strong>" in staff_page
    assert "<strong>1</strong> used" in staff_page
    assert f"{FLOOD} named nothing of ours (free)" in staff_page


def test_an_event_meeting_its_patients_running_sync_is_processed_after_that_run(
    make_app: Callable[..., App], own_sim: SimulatorServer, seed: Seed
) -> None:
    app = make_app(PQSYNC_WEBHOOK_COALESCE_SECONDS=0)
    with open_client(app) as client:
        sync_organization(client, seed)
        ident = a_live_appointment(app, own_sim, seed.consenting)
        service = app.sync_service()
        running = service.prepare_patient(str(seed.consenting), actor=Actor("cli"))

        cancelled = own_sim.app.store.cancel(ident, "provider ill")
        client.post(WEBHOOK, json=event("AppointmentCanceled", cancelled))
        wait_for_background(client)
        with Session(app.engine) as session:
            waiting = session.scalar(
                select(func.count()).where(WebhookEvent.processed_at.is_(None))
            )
        assert waiting == 1
        assert webhook_requests(app) == 0

        service.run(running)
        wait_for_background(client)  # the re-fetch, tried again after the run
        with Session(app.engine) as session:
            waiting = session.scalar(
                select(func.count()).where(WebhookEvent.processed_at.is_(None))
            )
            webhook_runs = list(
                session.scalars(select(SyncLog).where(SyncLog.run_type == "webhook"))
            )
        assert waiting == 0
        assert [(r.status, r.requests_made) for r in webhook_runs] == [("success", 1)]
        assert status_seen(client, seed, seed.consenting, ident) == "cancelled"


def test_the_change_mark_moves_with_a_webhook_change_and_hides_other_organisations(
    make_app: Callable[..., App], own_sim: SimulatorServer, seed: Seed
) -> None:
    app = make_app(PQSYNC_WEBHOOK_COALESCE_SECONDS=0)
    partner = seed.bearer("case_manager")
    base = "/api/partner-dashboard/changes"
    with open_client(app) as client:
        sync_organization(client, seed)
        of_patient = client.get(f"{base}?patientId={seed.consenting}", headers=partner)
        of_roster = client.get(base, headers=partner)
        assert of_patient.status_code == of_roster.status_code == 200
        again = client.get(f"{base}?patientId={seed.consenting}", headers=partner).json()
        assert again == of_patient.json()

        ident = a_live_appointment(app, own_sim, seed.consenting)
        cancelled = own_sim.app.store.cancel(ident, "provider ill")
        client.post(WEBHOOK, json=event("AppointmentCanceled", cancelled))
        wait_for_background(client)

        after = client.get(f"{base}?patientId={seed.consenting}", headers=partner).json()
        roster_after = client.get(base, headers=partner).json()
        hidden = client.get(f"{base}?patientId={seed.other_patient}", headers=partner)
        other_org = client.get(f"{base}?organizationId={seed.orgs['other']}", headers=partner)
    assert after["mark"] != of_patient.json()["mark"]
    assert roster_after["mark"] != of_roster.json()["mark"]
    assert hidden.status_code == other_org.status_code == 404


def pending_events(app: App) -> int:
    """Events the queue of record still holds for a re-fetch."""
    with Session(app.engine) as session:
        return int(
            session.scalar(
                select(func.count()).where(
                    WebhookEvent.processed_at.is_(None),
                    WebhookEvent.outcome.in_(("queued", "coalesced")),
                )
            )
            or 0
        )


def webhook_runs(app: App) -> list[str]:
    with Session(app.engine) as session:
        return list(
            session.scalars(
                select(SyncLog.status)
                .where(SyncLog.run_type == "webhook")
                .order_by(SyncLog.started_at)
            )
        )


def staff_runs_page(client: TestClient) -> str:
    sign_in_form(client, "staff_admin")
    page = client.get("/staff/runs")
    assert page.status_code == 200
    return page.text


def test_a_refetch_intakeq_fails_stays_pending_and_a_later_tick_applies_the_change(
    make_app: Callable[..., App], own_sim: SimulatorServer, seed: Seed, clock: FakeClock
) -> None:
    app = make_app(PQSYNC_WEBHOOK_COALESCE_SECONDS=0)
    with open_client(app) as client:
        sync_organization(client, seed)
        ident = a_live_appointment(app, own_sim, seed.consenting)
        cancelled = own_sim.app.store.cancel(ident, "provider ill")
        own_sim.configure(fail_rate=1.0, fault_kinds=["error500"])  # IntakeQ is down
        assert client.post(WEBHOOK, json=event("AppointmentCanceled", cancelled)).status_code == 202
        wait_for_background(client)

        assert webhook_runs(app) == ["failed"]
        assert pending_events(app) == 1  # not lost: still waiting
        assert status_seen(client, seed, seed.consenting, ident) != "cancelled"
        assert "1 waiting to be tried again (PracticeQ failed their re-fetch)" in staff_runs_page(
            client
        )
        app.jobs.tick()  # within its back-off: not tried again yet
        wait_for_background(client)
        assert webhook_runs(app) == ["failed"]

        own_sim.configure(fail_rate=0.0)  # IntakeQ recovers
        clock.advance(minutes=2)
        app.jobs.tick()
        wait_for_background(client)

        assert webhook_runs(app) == ["failed", "success"]
        assert pending_events(app) == 0
        assert status_seen(client, seed, seed.consenting, ident) == "cancelled"


def test_a_refetch_that_keeps_failing_is_given_up_and_shown_to_staff(
    make_app: Callable[..., App], own_sim: SimulatorServer, seed: Seed, clock: FakeClock
) -> None:
    app = make_app(PQSYNC_WEBHOOK_COALESCE_SECONDS=0)
    with open_client(app) as client:
        sync_organization(client, seed)
        ident = a_live_appointment(app, own_sim, seed.consenting)
        cancelled = own_sim.app.store.cancel(ident, "provider ill")
        own_sim.configure(fail_rate=1.0, fault_kinds=["error500"])
        client.post(WEBHOOK, json=event("AppointmentCanceled", cancelled))
        wait_for_background(client)
        for _ in range(12):  # an hour of ticks, IntakeQ down all along
            clock.advance(minutes=5)
            app.jobs.tick()
            wait_for_background(client)
        runs = webhook_runs(app)
        metrics = client.get("/metrics", headers=METRICS_AUTH).text
        page = staff_runs_page(client)

    # Tried six times (not once a minute: 1, 2, 4, 8, 16 minutes apart at least), then
    # given up, visibly.
    assert runs == ["failed"] * 6
    assert pending_events(app) == 0
    assert "<strong>1</strong> webhook change" in page
    assert "could not be fetched: PracticeQ failed every try" in page
    assert 'pqsync_webhook_events{outcome="failed"} 1.0' in metrics
