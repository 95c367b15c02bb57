"""A patient whose email no IntakeQ client carries: the sync says so in plain words, is not
a success, stamps no "last synced", and a second press within the minute answers the same."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session
from web_support import Seed

from pqsync.bootstrap import App
from pqsync.db.tables import Patient

PATIENTS = "/api/partner-dashboard/patients"
UNKNOWN = "PracticeQ has no client with this patient's email"


def forget(pq_app: App, seed: Seed, email: str) -> None:
    with Session(pq_app.engine) as session, session.begin():
        patient = session.get(Patient, seed.consenting)
        assert patient is not None
        patient.email = email
        patient.intakeq_client_id = None


def test_a_patient_practiceq_does_not_know_is_not_synced_and_says_why(
    client: TestClient, seed: Seed, pq_app: App
) -> None:
    forget(pq_app, seed, "not.in.practiceq@firststephouse.org")
    partner = seed.bearer("case_manager")
    url = f"{PATIENTS}/{seed.consenting}/sync"

    first = client.post(url, headers=partner)
    again = client.post(url, headers=partner)  # within the minute: that sync's answer

    for answer in (first, again):
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["success"] is False
        assert any(UNKNOWN in reason for reason in body["incomplete"]), body
    roster = {p["id"]: p for p in client.get(PATIENTS, headers=partner).json()["patients"]}
    assert roster[str(seed.consenting)]["lastSyncedAt"] is None


def test_a_known_patient_with_nothing_new_is_synced_without_that_word(
    client: TestClient, seed: Seed, pq_app: App
) -> None:
    answer = client.post(f"{PATIENTS}/{seed.consenting}/sync", headers=seed.bearer("case_manager"))
    assert answer.status_code == 200
    assert answer.json()["success"] is True
    assert "incomplete" not in answer.json()  # the proposal's shape when complete
