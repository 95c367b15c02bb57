"""The simulator's client changes over its control API: merges, moves, shared emails."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from intakeq_sim import ManualClock, SimulatorServer


def _listed(api: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    page = 1
    while True:
        batch = api.get("/appointments", params={**params, "page": page}).json()
        records.extend(batch)
        if len(batch) < 100:
            return records
        page += 1


def test_a_merge_moves_every_appointment_and_removes_the_duplicate(
    sim: SimulatorServer, api: httpx.Client, control: httpx.Client, clock: ManualClock
) -> None:
    rosa = next(c for c in sim.dataset.fsh_patients if c.first_name == "Rosa")
    created = control.post(
        "/clients", json={"FirstName": "Rosa", "LastName": "Delgado", "Email": "rosa@new.example"}
    )
    assert created.status_code == 200
    kept = created.json()["ClientId"]
    before = {r["Id"] for r in _listed(api, client=rosa.email)}
    assert before
    clock.advance(timedelta(days=1))
    merged = control.post(f"/clients/{rosa.client_id}/merge", json={"IntoClientId": kept})
    assert merged.json()["Moved"] >= len(before)
    moved = _listed(api, client="rosa@new.example")
    assert {r["Id"] for r in moved} == before
    assert {r["ClientId"] for r in moved} == {kept}
    assert _listed(api, client=rosa.email) == []
    # Listed again by updatedSince, and the duplicate profile is gone from /clients.
    since = (sim.dataset.today + timedelta(days=1)).isoformat()
    assert before <= {r["Id"] for r in _listed(api, updatedSince=since)}
    assert rosa.client_id not in {c["ClientId"] for c in api.get("/clients").json()}


def test_one_appointment_moves_to_another_client(
    sim: SimulatorServer, api: httpx.Client, control: httpx.Client
) -> None:
    ann = sim.dataset.special.email_substring
    appointment = _listed(api, client=ann.email)[0]
    other = next(
        c
        for c in sim.dataset.clients
        if c.organization is None and ann.email.lower() not in c.email.lower()
    )
    response = control.post(
        f"/appointments/{appointment['Id']}/client", json={"ClientId": other.client_id}
    )
    assert response.status_code == 200
    shown = api.get(f"/appointments/{appointment['Id']}").json()
    assert (shown["ClientId"], shown["ClientEmail"]) == (other.client_id, other.email)
    assert shown["LastModified"] >= appointment["LastModified"]
    assert appointment["Id"] not in {r["Id"] for r in _listed(api, client=ann.email)}


def test_two_clients_may_share_one_email(
    sim: SimulatorServer, api: httpx.Client, control: httpx.Client
) -> None:
    marcus = next(c for c in sim.dataset.fsh_patients if c.first_name == "Marcus")
    twin = control.post(
        "/clients",
        json={"FirstName": "Mia", "LastName": "Hill", "Email": marcus.email},
    ).json()
    booked = control.post(
        "/appointments",
        json={"ClientId": twin["ClientId"], "StartDateLocal": f"{sim.dataset.today}T09:00:00"},
    )
    assert booked.status_code == 200
    found = api.get("/clients", params={"search": marcus.email}).json()
    assert {c["ClientId"] for c in found} == {marcus.client_id, twin["ClientId"]}
    owners = {r["ClientId"] for r in _listed(api, client=marcus.email)}
    assert owners == {marcus.client_id, twin["ClientId"]}


def test_bad_client_changes_are_refused(sim: SimulatorServer, control: httpx.Client) -> None:
    ann = sim.dataset.special.email_substring
    assert control.post(f"/clients/{ann.client_id}/merge", json={}).status_code == 400
    unknown = control.post(f"/clients/{ann.client_id}/merge", json={"IntoClientId": 1})
    assert unknown.status_code == 404
    itself = control.post(f"/clients/{ann.client_id}/merge", json={"IntoClientId": ann.client_id})
    assert itself.status_code == 400
    assert control.post("/clients", json={"FirstName": "X"}).status_code == 400
    assert control.post("/appointments/nope/client", json={"ClientId": 1}).status_code == 404
