"""Our bookings to IntakeQ (issue 26): a booking through pqsync lands in IntakeQ once and the
pull never duplicates it; a booking whose answer was lost is retried from the queue without
a second IntakeQ appointment; cancel and reschedule reach IntakeQ and come back unchanged
through the pull. Each test has its own simulator (they change its appointments)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session
from web_support import (
    INTAKEQ_KEY,
    TODAY,
    Seed,
    intakeq_for,
    open_client,
    sign_in_form,
    wait_for_background,
)

from intakeq_sim import SimConfig, SimulatorServer
from pqsync.bootstrap import App
from pqsync.db.tables import Appointment

START = datetime(2025, 11, 20, 17, 30, tzinfo=UTC)  # 10:30 AM in Denver
MOVED = datetime(2025, 11, 21, 22, 0, tzinfo=UTC)


class LosesAnswers(httpx.BaseTransport):
    """Real HTTP, but the answers to the first `lose` bookings never arrive (IntakeQ did
    book: the connection timed out on the way back)."""

    def __init__(self, lose: int) -> None:
        self.inner = httpx.HTTPTransport()
        self.lose = lose

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        booking = request.method == "POST" and request.url.path.endswith("/appointments")
        if booking and self.lose > 0:
            self.lose -= 1
            response.read()
            response.close()
            raise httpx.ReadTimeout("the answer was lost", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def own_sim() -> Iterator[SimulatorServer]:
    config = SimConfig(minute_limit=None, daily_limit=None)
    with SimulatorServer(port=0, seed=1, today=TODAY, api_key=INTAKEQ_KEY, config=config) as sim:
        yield sim


@pytest.fixture
def make_app(build_app: Callable[..., App], own_sim: SimulatorServer) -> Callable[..., App]:
    def make(lose: int = 0) -> App:
        return build_app(intakeq_for(own_sim, LosesAnswers(lose)))

    return make


def pull(client: TestClient, seed: Seed) -> None:
    synced = client.post(
        f"/api/partner-dashboard/organizations/{seed.orgs['own']}/sync-all-patients",
        headers=seed.bearer("staff_admin"),
    )
    assert synced.status_code == 200, synced.text


def booking(sim: SimulatorServer, seed: Seed) -> dict[str, Any]:
    return {
        "patientId": str(seed.consenting),
        "startTime": START.isoformat(),
        "practitionerId": sim.dataset.mapped_practitioners[0].id,
        "serviceId": sim.dataset.services[1].id,
        "locationId": sim.dataset.locations[0].id,
    }


def in_intakeq_at(sim: SimulatorServer, start: datetime) -> list[dict[str, Any]]:
    ms = int(start.timestamp() * 1000)
    return [a for a in sim.app.store.snapshot(include_deleted=False) if a["StartDate"] == ms]


def stored(app: App, intakeq_id: str) -> list[Appointment]:
    with Session(app.engine) as session:
        return list(
            session.scalars(select(Appointment).where(Appointment.pq_appointment_id == intakeq_id))
        )


def test_a_booking_reaches_intakeq_once_and_the_pull_keeps_one(
    make_app: Callable[..., App], own_sim: SimulatorServer, seed: Seed
) -> None:
    app = make_app()
    with open_client(app) as client:
        pull(client, seed)  # the patient's ClientId is learned
        booked = client.post(
            "/api/appointments", json=booking(own_sim, seed), headers=seed.bearer("staff_admin")
        )
        assert booked.status_code == 201, booked.text
        ident = booked.json()["intakeqAppointmentId"]
        assert [a["Id"] for a in in_intakeq_at(own_sim, START)] == [ident]
        assert len(stored(app, ident)) == 1  # IntakeQ's Id is with our row at once
        pull(client, seed)
        pull(client, seed)
    assert [a["Id"] for a in in_intakeq_at(own_sim, START)] == [ident]
    rows = stored(app, ident)
    assert len(rows) == 1 and rows[0].patient_id == seed.consenting


def test_a_booking_whose_answer_was_lost_is_retried_without_a_second_appointment(
    make_app: Callable[..., App], own_sim: SimulatorServer, seed: Seed
) -> None:
    app = make_app(lose=1)
    staff = seed.bearer("staff_admin")
    with open_client(app) as client:
        pull(client, seed)
        first = client.post("/api/appointments", json=booking(own_sim, seed), headers=staff)
        assert first.status_code == 202, first.text
        assert first.json()["status"] == "pending"
        assert first.json()["error"] == "IntakeQ did not answer; it is tried again"
        assert len(in_intakeq_at(own_sim, START)) == 1  # IntakeQ did book it
        sign_in_form(client, "staff_admin")
        waiting = client.get("/staff/runs").text
        client.cookies.clear()

        wait_for_background(client)  # the retry, from the queue
        state = client.get(f"/api/appointments/pushes/{first.json()['pushId']}", headers=staff)
        pull(client, seed)
    made = in_intakeq_at(own_sim, START)
    assert len(made) == 1
    assert (
        "book, waiting to be tried again (1 tried so far): "
        "IntakeQ did not answer; it is tried again" in waiting
    )
    assert state.json()["status"] == "done"
    assert state.json()["intakeqAppointmentId"] == made[0]["Id"]
    assert len(stored(app, made[0]["Id"])) == 1


def test_cancel_and_reschedule_reach_intakeq_and_come_back_unchanged(
    make_app: Callable[..., App], own_sim: SimulatorServer, seed: Seed
) -> None:
    app = make_app()
    staff = seed.bearer("staff_admin")
    with open_client(app) as client:
        pull(client, seed)
        ident = client.post("/api/appointments", json=booking(own_sim, seed), headers=staff).json()[
            "intakeqAppointmentId"
        ]
        moved = client.post(
            f"/api/appointments/{ident}/reschedule",
            json={"startTime": MOVED.isoformat()},
            headers=staff,
        )
        assert moved.status_code == 201, moved.text
        assert own_sim.app.store.get(ident)["StartDate"] == int(MOVED.timestamp() * 1000)
        cancelled = client.post(
            f"/api/appointments/{ident}/cancel", json={"reason": "patient asked"}, headers=staff
        )
        assert cancelled.status_code == 201, cancelled.text
        assert own_sim.app.store.get(ident)["Status"] == "Canceled"
        before = [(r.status, r.start_time) for r in stored(app, ident)]
        pull(client, seed)
        missing = client.post(
            "/api/appointments/not-ours/cancel", json={"reason": "x"}, headers=staff
        )
    assert before == [("cancelled", MOVED)]
    assert [(r.status, r.start_time) for r in stored(app, ident)] == before
    assert missing.status_code == 404
