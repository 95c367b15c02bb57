"""The simulator's webhooks over real HTTP: one IntakeQ-shaped event per change, and the
knobs that duplicate, drop, delay (reorder) and forge them."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from intakeq_sim import SimulatorServer


class Receiver:
    """A webhook endpoint on loopback that keeps every body it is sent."""

    def __init__(self, status: int = 200) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.status = status
        received = self.bodies
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/hook?token=t"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _book(sim: SimulatorServer, client_id: int, hours: int = 1) -> dict[str, Any]:
    start = datetime(2025, 10, 28, 16, 0, tzinfo=UTC) + timedelta(hours=hours)
    response = httpx.post(
        f"{sim.control_url}/appointments",
        json={"ClientId": client_id, "UtcDateTime": int(start.timestamp() * 1000)},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_every_change_is_one_intakeq_shaped_event(
    make_sim: Callable[..., SimulatorServer], receiver: Receiver
) -> None:
    sim = make_sim()
    sim.configure_webhooks(url=receiver.url, practice_id="p-7")
    client_id = sim.dataset.clients[0].client_id
    booked = _book(sim, client_id)
    ident = booked["Id"]
    moved = datetime(2025, 10, 30, 17, 0, tzinfo=UTC)
    httpx.patch(
        f"{sim.control_url}/appointments/{ident}",
        json={"UtcDateTime": int(moved.timestamp() * 1000)},
    )
    httpx.post(f"{sim.control_url}/appointments/{ident}/cancel", json={"Reason": "ill"})
    httpx.post(f"{sim.control_url}/appointments/{ident}/delete")
    assert sim.webhooks.wait_idle()

    assert [b["EventType"] for b in receiver.bodies] == [
        "AppointmentCreated",
        "AppointmentRescheduled",
        "AppointmentCanceled",
        "AppointmentDeleted",
    ]
    first = receiver.bodies[0]
    assert first["PracticeId"] == "p-7"
    assert first["ClientId"] == client_id
    assert first["ActionPerformedByClient"] is False
    assert first["Appointment"]["Id"] == ident
    assert first["Appointment"]["ClientEmail"] == booked["ClientEmail"]
    assert receiver.bodies[1]["Appointment"]["StartDate"] == int(moved.timestamp() * 1000)
    assert receiver.bodies[2]["Appointment"]["Status"] == "Canceled"


def test_no_url_sends_nothing(make_sim: Callable[..., SimulatorServer], receiver: Receiver) -> None:
    sim = make_sim()
    _book(sim, sim.dataset.clients[0].client_id)
    assert sim.webhooks.wait_idle()
    assert receiver.bodies == []
    assert sim.webhooks.stats()["events"] == 0


def test_knobs_duplicate_drop_and_reorder(
    make_sim: Callable[..., SimulatorServer], receiver: Receiver
) -> None:
    sim = make_sim()
    client_id = sim.dataset.clients[0].client_id
    state = httpx.post(
        f"{sim.control_url}/webhooks", json={"url": receiver.url, "duplicate_rate": 1.0}
    )
    assert state.status_code == 200
    twice = _book(sim, client_id)["Id"]
    assert sim.webhooks.wait_idle()
    assert [b["Appointment"]["Id"] for b in receiver.bodies] == [twice, twice]

    sim.configure_webhooks(duplicate_rate=0.0, drop_rate=1.0)
    _book(sim, client_id, hours=2)
    assert sim.webhooks.wait_idle()
    assert len(receiver.bodies) == 2

    receiver.bodies.clear()
    sim.configure_webhooks(drop_rate=0.0, max_delay_ms=300)
    sent = [_book(sim, client_id, hours=3 + n)["Id"] for n in range(20)]
    assert sim.webhooks.wait_idle()
    got = [b["Appointment"]["Id"] for b in receiver.bodies]
    assert sorted(got) == sorted(sent)
    assert got != sent  # the random delays reordered them

    stats = httpx.get(f"{sim.control_url}/webhooks").json()["stats"]
    assert (stats["events"], stats["duplicated"], stats["dropped"]) == (22, 1, 1)
    assert stats["delivered"] == 22 and stats["pending"] == 0


def test_a_forged_event_is_sent_as_given(
    make_sim: Callable[..., SimulatorServer], receiver: Receiver
) -> None:
    sim = make_sim()
    sim.configure_webhooks(url=receiver.url)
    forged = {"EventType": "AppointmentCanceled", "Appointment": {"Id": "made-up"}, "ClientId": 1}
    assert httpx.post(f"{sim.control_url}/webhooks/forge", json=forged).status_code == 202
    assert sim.webhooks.wait_idle()
    assert receiver.bodies == [forged]
    assert sim.webhooks.stats()["forged"] == 1


def test_a_failing_receiver_is_tried_again_then_counted_failed(
    make_sim: Callable[..., SimulatorServer],
) -> None:
    failing = Receiver(status=503)
    try:
        sim = make_sim()
        sim.configure_webhooks(url=failing.url, attempts=2)
        _book(sim, sim.dataset.clients[0].client_id)
        assert sim.webhooks.wait_idle()
    finally:
        failing.close()
    assert len(failing.bodies) == 2
    assert sim.webhooks.stats()["failed"] == 1


def test_bad_knobs_are_refused(make_sim: Callable[..., SimulatorServer]) -> None:
    sim = make_sim()
    for bad in ({"drop_rate": 2}, {"nonsense": 1}, {"max_delay_ms": -1}):
        assert httpx.post(f"{sim.control_url}/webhooks", json=bad).status_code == 400
