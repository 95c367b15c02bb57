"""The three endpoints the proposal fixes answer exactly its fields, with its types."""

from __future__ import annotations

import re
import uuid
from typing import Any

from fastapi.testclient import TestClient
from web_support import FakeClock, Seed, wait_for_background

LOCAL_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$")

PATIENT_SYNC_EXAMPLE = {
    "success": True,
    "patientId": "3adb45a7-c87a-404d-b52d-18281339723f",
    "patientName": "Austin Schneider",
    "syncedAt": "2025-11-15T14:03:00-07:00",
    "summary": {"new": 2, "updated": 1, "unchanged": 5, "errors": 0},
    "appointments": [
        {
            "id": "9f1c7c57-1b7e-4f5e-8a39-3c1f4f8e2a11",
            "pqAppointmentId": "abc123",
            "startTime": "2025-11-15T14:00:00-07:00",
            "providerName": "Dr. C. Rufus Sweeney",
            "status": "confirmed",
            "syncAction": "new",
        }
    ],
}

BULK_SYNC_EXAMPLE = {
    "success": True,
    "organizationId": "0b8f7a4e-6a0c-4d36-9a57-5d2b8d3e9c10",
    "organizationName": "First Step House",
    "syncedAt": "2025-11-15T14:03:00-07:00",
    "patientsProcessed": 12,
    "totalSummary": {"new": 2, "updated": 1, "unchanged": 5, "errors": 0},
    "patientResults": [
        {
            "patientId": "3adb45a7-c87a-404d-b52d-18281339723f",
            "patientName": "Austin Schneider",
            "success": True,
            "summary": {"new": 2, "updated": 1, "unchanged": 5, "errors": 0},
            "error": None,
        }
    ],
}

HISTORY_EXAMPLE = {
    "patient": {"id": "3adb45a7-c87a-404d-b52d-18281339723f", "name": "Austin Schneider"},
    "lastSync": "2025-11-15T14:03:00-07:00",
    "history": [
        {
            "syncedAt": "2025-11-15T14:03:00-07:00",
            "triggeredBy": "Beth Rodriguez",
            "summary": {"new": 2, "updated": 1, "unchanged": 5, "errors": 0},
        }
    ],
}

# Fields the proposal shows with a value that may also be null.
NULLABLE = {"providerName", "error", "lastSync"}


def assert_shaped_like(actual: Any, example: Any, path: str = "$") -> None:
    """Same keys at every level, the same JSON type for every value (ids are UUIDs, times
    carry their offset); list items are each checked against the example's first."""
    if isinstance(example, dict):
        assert isinstance(actual, dict), path
        assert set(actual) == set(example), f"{path}: {sorted(actual)} != {sorted(example)}"
        for key, value in example.items():
            if actual[key] is None and key in NULLABLE:
                continue
            if value is None:  # documented as null here; a string when there is something
                assert isinstance(actual[key], str), f"{path}.{key}"
                continue
            assert_shaped_like(actual[key], value, f"{path}.{key}")
            if key == "id" or (key.endswith("Id") and key != "pqAppointmentId"):
                uuid.UUID(actual[key])
            if key.endswith(("At", "Time")) or key == "lastSync":
                assert LOCAL_TIME.match(actual[key]), f"{path}.{key}: {actual[key]}"
    elif isinstance(example, list):
        assert isinstance(actual, list), path
        for index, item in enumerate(actual):
            assert_shaped_like(item, example[0], f"{path}[{index}]")
    else:
        assert type(actual) is type(example), f"{path}: {actual!r} is not like {example!r}"


def test_patient_sync_answers_the_proposal_fields(client: TestClient, seed: Seed) -> None:
    response = client.post(
        f"/api/partner-dashboard/patients/{seed.consenting}/sync",
        headers=seed.bearer("case_manager"),
        json={"dateRange": {"startDate": "2025-08-17", "endDate": "2026-02-13"}},
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert_shaped_like(body, PATIENT_SYNC_EXAMPLE)
    assert body["appointments"], "the simulator holds appointments for this patient"
    assert body["patientId"] == str(seed.consenting)
    assert body["patientName"] == seed.names[seed.consenting]
    assert body["syncedAt"] == "2025-11-15T14:03:00-07:00"
    assert body["summary"]["new"] == len(body["appointments"])
    assert {a["syncAction"] for a in body["appointments"]} == {"new"}


def test_bulk_sync_answers_the_proposal_fields(client: TestClient, seed: Seed) -> None:
    # The clinic's staff see every patient's counts (a partner only those with ROI consent).
    response = client.post(
        f"/api/partner-dashboard/organizations/{seed.orgs['own']}/sync-all-patients",
        headers=seed.bearer("staff_admin"),
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert_shaped_like(body, BULK_SYNC_EXAMPLE)
    assert body["organizationName"] == "First Step House"
    assert body["patientsProcessed"] == len(body["patientResults"]) == 12
    total = body["totalSummary"]
    assert total["new"] == sum(p["summary"]["new"] for p in body["patientResults"]) > 0


def test_sync_history_answers_the_proposal_fields(
    client: TestClient, seed: Seed, clock: FakeClock
) -> None:
    url = f"/api/partner-dashboard/patients/{seed.consenting}"
    client.post(f"{url}/sync", headers=seed.bearer("partner_admin"))
    clock.advance(minutes=5)
    client.post(
        f"/api/partner-dashboard/organizations/{seed.orgs['own']}/sync-all-patients",
        headers={**seed.bearer("case_manager"), "Prefer": "respond-async"},
    )
    wait_for_background(client)

    response = client.get(f"{url}/sync-history", headers=seed.bearer("viewer"))

    assert response.status_code == 200, response.text
    body = response.json()
    assert_shaped_like(body, HISTORY_EXAMPLE)
    assert body["patient"] == {"id": str(seed.consenting), "name": seed.names[seed.consenting]}
    assert body["lastSync"] == "2025-11-15T14:08:00-07:00"
    assert [(h["syncedAt"], h["triggeredBy"]) for h in body["history"]] == [
        ("2025-11-15T14:08:00-07:00", "Jordan Ames"),
        ("2025-11-15T14:03:00-07:00", "Beth Rodriguez"),
    ]


def test_sync_history_of_a_patient_never_synced_is_empty(client: TestClient, seed: Seed) -> None:
    response = client.get(
        f"/api/partner-dashboard/patients/{seed.consenting}/sync-history",
        headers=seed.bearer("viewer"),
    )

    assert response.status_code == 200
    body = response.json()
    assert_shaped_like(body, HISTORY_EXAMPLE)
    assert body["lastSync"] is None
    assert body["history"] == []
