"""Rate limits, injected faults, malformed records, the control API and quiet logging."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

import pqsync
from intakeq_sim import (
    ManualClock,
    Request,
    SimConfig,
    SimulatorApp,
    SimulatorServer,
    demo_directory,
    malformed_kind,
)
from pqsync.intakeq.models import MalformedRecord, parse_appointment
from pqsync.settings import SIMULATOR_API_KEY

KEY = {"X-Auth-Key": SIMULATOR_API_KEY}


def _client(sim: SimulatorServer, timeout: float = 10) -> httpx.Client:
    return httpx.Client(base_url=sim.base_url, headers=KEY, timeout=timeout)


def _settings_statuses(sim: SimulatorServer, count: int) -> list[int]:
    with _client(sim) as api:
        return [api.get("/appointments/settings").status_code for _ in range(count)]


# --- rate limits ------------------------------------------------------------------------------


def test_minute_limit_answers_429_without_retry_after_then_recovers(
    make_sim: Callable[..., SimulatorServer], clock: ManualClock
) -> None:
    sim = make_sim(config=SimConfig(minute_limit=3, minute_window_seconds=60))
    with _client(sim) as api:
        statuses = [api.get("/appointments/settings") for _ in range(5)]
        assert [r.status_code for r in statuses] == [200, 200, 200, 429, 429]
        assert "retry-after" not in statuses[-1].headers
        clock.advance(timedelta(seconds=61))
        assert api.get("/appointments/settings").status_code == 200
    stats = sim.stats()
    assert stats["rate_limited"] == 2
    assert stats["by_route"]["GET /appointments/settings"] == {"200": 4, "429": 2}
    assert stats["max_accepted_in_window"] == 3


def test_rejected_requests_do_not_use_up_the_window(
    make_sim: Callable[..., SimulatorServer], clock: ManualClock
) -> None:
    sim = make_sim(config=SimConfig(minute_limit=2, minute_window_seconds=10))
    assert _settings_statuses(sim, 2) == [200, 200]
    clock.advance(timedelta(seconds=5))
    assert _settings_statuses(sim, 3) == [429, 429, 429]
    clock.advance(timedelta(seconds=5.5))  # the first two have left the window
    assert _settings_statuses(sim, 3) == [200, 200, 429]


def test_daily_limit(make_sim: Callable[..., SimulatorServer], clock: ManualClock) -> None:
    sim = make_sim(config=SimConfig(minute_limit=None, daily_limit=4))
    assert _settings_statuses(sim, 5) == [200, 200, 200, 200, 429]
    clock.advance(timedelta(hours=23))
    assert _settings_statuses(sim, 1) == [429]
    clock.advance(timedelta(hours=1, seconds=1))
    assert _settings_statuses(sim, 1) == [200]


def test_limits_are_per_key_and_a_bad_key_spends_nothing(
    make_sim: Callable[..., SimulatorServer],
) -> None:
    sim = make_sim(config=SimConfig(minute_limit=1))
    wrong = httpx.get(f"{sim.base_url}/appointments", headers={"X-Auth-Key": "wrong"})
    assert wrong.status_code == 401
    assert _settings_statuses(sim, 2) == [200, 429]
    assert sim.stats()["by_status"] == {"200": 1, "401": 1, "429": 1}


def test_no_limit_when_disabled(make_sim: Callable[..., SimulatorServer]) -> None:
    sim = make_sim(config=SimConfig(minute_limit=0, daily_limit=None))
    assert set(_settings_statuses(sim, 25)) == {200}
    assert sim.stats()["max_accepted_in_window"] == 25


# --- faults -------------------------------------------------------------------------------------


def test_fault_error500(make_sim: Callable[..., SimulatorServer]) -> None:
    sim = make_sim(config=SimConfig(minute_limit=None, fail_rate=1.0, fault_kinds=("error500",)))
    assert _settings_statuses(sim, 2) == [500, 500]
    assert sim.stats()["faults"]["error500"] == 2


def test_fault_drop_closes_the_connection_without_a_response(
    make_sim: Callable[..., SimulatorServer],
) -> None:
    sim = make_sim(config=SimConfig(minute_limit=None, fail_rate=1.0, fault_kinds=("drop",)))
    with _client(sim) as api, pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        api.get("/appointments")
    assert sim.stats()["faults"]["drop"] == 1


def test_fault_hang_outlasts_the_client_timeout(make_sim: Callable[..., SimulatorServer]) -> None:
    config = SimConfig(minute_limit=None, fail_rate=1.0, fault_kinds=("hang",), hang_seconds=30)
    sim = make_sim(config=config)
    with _client(sim, timeout=0.3) as api, pytest.raises(httpx.ReadTimeout):
        api.get("/appointments")
    # stop() (in the fixture) wakes the hung request instead of waiting 30 s for it.


def test_faults_follow_the_seed(make_sim: Callable[..., SimulatorServer]) -> None:
    def outcomes(seed: int) -> list[str]:
        config = SimConfig(minute_limit=None, fail_rate=0.5, fault_kinds=("error500", "drop"))
        sim = make_sim(seed=seed, config=config)
        seen = []
        with _client(sim) as api:
            for _ in range(30):
                try:
                    seen.append(str(api.get("/appointments/settings").status_code))
                except httpx.TransportError:
                    seen.append("drop")
        return seen

    first = outcomes(5)
    assert first == outcomes(5)
    assert {"200", "500", "drop"} == set(first)


def test_knobs_change_at_runtime(sim: SimulatorServer) -> None:
    with httpx.Client(base_url=sim.control_url) as control:
        changed = control.post(
            "/config", json={"fail_rate": 1, "fault_kinds": ["error500"], "latency_ms": 20}
        )
        assert changed.status_code == 200
        assert changed.json()["fail_rate"] == 1.0
        assert _settings_statuses(sim, 1) == [500]
        control.post("/config", json={"fail_rate": 0})
        assert _settings_statuses(sim, 1) == [200]
        assert control.get("/config").json()["latency_ms"] == 20
        for bad in ({"fail_rate": 2}, {"minute_limit": "ten"}, {"api_key": "x"}):
            assert control.post("/config", json=bad).status_code == 400
        assert control.post("/reset-stats").json()["requests"] == 0
    assert sim.configure(fault_kinds=("drop",)).fault_kinds == ("drop",)


def test_malformed_records_are_served_among_good_ones(
    make_sim: Callable[..., SimulatorServer],
) -> None:
    rate = 0.3
    sim = make_sim(config=SimConfig(minute_limit=None, malformed_rate=rate))
    with _client(sim) as api:
        first = api.get("/appointments").json()
        again = api.get("/appointments").json()
    assert first == again  # the same records are broken every time
    unusable = 0
    for record in first:
        try:
            parse_appointment(record)
        except MalformedRecord:
            unusable += 1
    assert 0 < unusable < len(first)
    truth = sim.app.store.snapshot(include_deleted=False)[:100]
    expected = [malformed_kind(sim.dataset.seed, r["Id"], rate) for r in truth]
    assert sum(1 for kind in expected if kind) == sim.stats()["malformed_records"] // 2
    assert sum(1 for kind in expected if kind in {"missing_id", "null_start", "bad_date"}) == (
        unusable
    )


# --- control API --------------------------------------------------------------------------------


def test_control_api_acts_as_the_provider(sim: SimulatorServer) -> None:
    special = sim.dataset.special
    with httpx.Client(base_url=sim.control_url) as control, _client(sim) as api:
        created = control.post(
            "/appointments",
            json={
                "ClientId": special.heavy.client_id,
                "StartDateLocal": "2025-11-02T18:30:00",
                "Status": "WaitingConfirmation",
            },
        ).json()
        assert created["StartDateIso"] == "2025-11-03T01:30:00.0000000Z"  # MST from 2 Nov
        appointment_id = created["Id"]
        moved = control.patch(
            f"/appointments/{appointment_id}",
            json={
                "StartDateIso": "2025-11-05T16:00:00Z",
                "PractitionerId": special.unmapped_practitioner.id,
                "Status": "Confirmed",
            },
        ).json()
        assert moved["StartDateLocal"] == "2025-11-05T09:00:00"
        assert moved["PractitionerId"] == special.unmapped_practitioner.id
        canceled = control.post(f"/appointments/{appointment_id}/cancel", json={"Reason": "r"})
        assert canceled.json()["Status"] == "Canceled"
        assert api.get(f"/appointments/{appointment_id}").json()["Status"] == "Canceled"
        truth = control.get("/appointments").json()
        assert {"Deleted", "DeletedAt"} <= set(truth[0])
        assert len(truth) == len(sim.dataset.appointments)
        assert control.get("/directory").json() == demo_directory(sim.dataset)
        assert control.get("/info").json()["special"]["heavy"] == special.heavy.client_id
        assert control.post("/appointments", json={"ClientId": 5501}).status_code == 400
        assert control.post("/appointments/nope/delete").status_code == 404
        assert control.get("/nothing").status_code == 404
    # The control API is the provider's, not the client's: it spends no API budget.
    assert sim.stats()["requests"] == 1


def test_control_api_refuses_other_hosts(sim: SimulatorServer) -> None:
    app: SimulatorApp = sim.app
    request = Request("GET", "/_sim/stats", {}, None, b"", "10.0.0.7")
    assert app.handle(request).status == 403
    assert app.handle(Request("GET", "/_sim/stats", {}, None, b"", "127.0.0.1")).status == 200


# --- logging and serving ------------------------------------------------------------------------


def test_logs_hold_no_patient_data_or_key(
    sim: SimulatorServer, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    email = sim.dataset.special.plus_address.email
    with caplog.at_level(logging.DEBUG, logger="intakeq_sim"), _client(sim) as api:
        api.get("/appointments", params={"client": email})
        api.get("/clients", params={"search": email})
        httpx.get(f"{sim.base_url}/appointments?client=x", headers={"X-Auth-Key": "secret-9"})
    logged = caplog.text + "".join(capfd.readouterr())
    assert "GET /api/v1/appointments 200" in logged
    for secret in (email, "austin", SIMULATOR_API_KEY, "secret-9"):
        assert secret not in logged


@pytest.mark.e2e
def test_module_serves_until_interrupted(tmp_path: Path) -> None:
    src = str(Path(pqsync.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src}
    process = subprocess.Popen(
        [sys.executable, "-m", "intakeq_sim", "--port", "0", "--minute-limit", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        base_url = line.split(" ready at ")[1].split()[0]
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/api/v1")
        response = httpx.get(f"{base_url}/appointments/settings", headers=KEY)
        assert response.status_code == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
