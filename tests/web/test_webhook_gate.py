"""What the webhook token holder can start (issue 17, item 9): a burst for one client is one
re-fetch, webhook work takes at most its share of the day's budget, and events naming
another practice are ignored and counted."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from web_support import (
    METRICS_TOKEN,
    WEBHOOK_TOKEN,
    FakeClock,
    Seed,
    open_client,
    wait_for_background,
)

from pqsync.bootstrap import App
from pqsync.db.tables import Appointment, Patient, SyncLog

METRICS_AUTH = {"Authorization": f"Bearer {METRICS_TOKEN}"}

WEBHOOK = f"/api/webhooks/practiceq/appointments?token={WEBHOOK_TOKEN}"


def stored_appointments(app: App, seed: Seed) -> list[tuple[uuid.UUID, int, str]]:
    """(patient, IntakeQ client id, appointment id) of stored appointments, after a sync."""
    with open_client(app) as client:
        synced = client.post(
            f"/api/partner-dashboard/organizations/{seed.orgs['own']}/sync-all-patients",
            headers=seed.bearer("partner_admin"),
        )
        assert synced.status_code == 200, synced.text
    with Session(app.engine) as session:
        rows = session.execute(
            select(Patient.id, Patient.intakeq_client_id, Appointment.pq_appointment_id)
            .join(Appointment, Appointment.patient_id == Patient.id)
            .where(Patient.intakeq_client_id.is_not(None))
            .order_by(Patient.id, Appointment.pq_appointment_id)
        ).all()
    return [(row[0], int(row[1]), row[2]) for row in rows]


def hook(client: TestClient, client_id: int, appointment_id: str, practice: str = "p-1") -> int:
    response = client.post(
        WEBHOOK,
        json={
            "EventType": "AppointmentRescheduled",
            "Appointment": {"Id": appointment_id, "ClientId": client_id},
            "ClientId": client_id,
            "PracticeId": practice,
        },
    )
    return response.status_code


def webhook_runs(app: App) -> list[SyncLog]:
    with Session(app.engine) as session:
        return list(session.scalars(select(SyncLog).where(SyncLog.run_type == "webhook")))


def test_ten_webhooks_for_one_client_a_second_and_a_half_apart_make_one_refetch(
    build_app: Callable[..., App], seed: Seed, clock: FakeClock
) -> None:
    app = build_app(PQSYNC_WEBHOOK_COALESCE_SECONDS=30)
    _patient, client_id, appointment_id = stored_appointments(app, seed)[0]

    with open_client(app) as client:
        statuses = []
        for _ in range(10):
            statuses.append(hook(client, client_id, appointment_id))
            clock.advance(seconds=1.5)
        wait_for_background(client)
        metrics = client.get("/metrics", headers=METRICS_AUTH).text

    assert statuses == [202] * 10
    runs = webhook_runs(app)
    assert [(r.status, r.requests_made) for r in runs] == [("success", 1)]
    assert 'pqsync_webhook_events{outcome="queued"} 1.0' in metrics
    assert 'pqsync_webhook_events{outcome="coalesced"} 9.0' in metrics


def test_a_burst_naming_two_appointments_of_a_client_refetches_the_whole_patient(
    build_app: Callable[..., App], seed: Seed, clock: FakeClock
) -> None:
    app = build_app(PQSYNC_WEBHOOK_COALESCE_SECONDS=30)
    stored = stored_appointments(app, seed)
    patient, client_id, first = stored[0]
    second = next(a for p, _c, a in stored if p == patient and a != first)

    with open_client(app) as client:
        hook(client, client_id, first)
        clock.advance(seconds=2)
        hook(client, client_id, second)
        wait_for_background(client)

    runs = webhook_runs(app)
    assert [(r.sync_type, r.patient_id, r.details["plan"]) for r in runs] == [
        ("patient", patient, "per_patient")
    ]


def test_webhook_work_stops_at_its_share_of_the_days_budget(
    build_app: Callable[..., App], seed: Seed
) -> None:
    # 20% of 50 requests: 10 for webhooks. The organisation sync below spends a few of the rest.
    app = build_app(INTAKEQ_DAILY_LIMIT=50, PQSYNC_WEBHOOK_COALESCE_SECONDS=0)
    clients = {}
    for patient, client_id, appointment_id in stored_appointments(app, seed):
        clients.setdefault(patient, (client_id, appointment_id))
    assert len(clients) > 10

    with open_client(app) as client:
        for client_id, appointment_id in list(clients.values()):
            hook(client, client_id, appointment_id)
            wait_for_background(client)
        metrics = client.get("/metrics", headers=METRICS_AUTH).text

    with Session(app.engine) as session:
        spent = session.scalar(
            select(func.sum(SyncLog.requests_made)).where(SyncLog.run_type == "webhook")
        )
    assert spent == 10
    assert f'pqsync_webhook_events{{outcome="limited"}} {float(len(clients) - 10)}' in metrics


def test_events_naming_another_practice_are_ignored_and_counted(
    build_app: Callable[..., App], seed: Seed
) -> None:
    app = build_app(INTAKEQ_PRACTICE_ID="p-1")
    _patient, client_id, appointment_id = stored_appointments(app, seed)[0]

    with open_client(app) as client:
        assert hook(client, client_id, appointment_id, practice="someone-else") == 202
        wait_for_background(client)
        metrics = client.get("/metrics", headers=METRICS_AUTH).text

    assert webhook_runs(app) == []
    assert 'pqsync_webhook_events{outcome="foreign"} 1.0' in metrics
    assert 'pqsync_webhook_events{outcome="queued"} 0.0' in metrics
