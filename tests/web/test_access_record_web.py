"""Every read of patient data goes into the access record, which staff ask per patient and
per user (page and CLI); partners cannot read it."""

from __future__ import annotations

import json
import uuid

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session
from test_dashboard_pages import sign_in
from typer.testing import CliRunner
from web_support import USERS, Seed, open_client

from pqsync.bootstrap import App
from pqsync.cli import cli
from pqsync.db.tables import PartnerUser
from pqsync.services.access import access_by_user, access_for_patient

PATIENTS = "/api/partner-dashboard/patients"


def reads_of(pq_app: App, seed: Seed) -> list[tuple[str, str]]:
    with Session(pq_app.engine) as session:
        entries = access_for_patient(session, seed.consenting)
    return [(e.user_email, e.view) for e in entries]


def test_the_patient_page_the_roster_and_the_api_each_add_records_the_patient_query_returns(
    pq_app: App, seed: Seed
) -> None:
    assert reads_of(pq_app, seed) == []
    api = open_client(pq_app)
    manager = seed.bearer("case_manager")

    assert api.get(PATIENTS, params={"limit": 200}, headers=manager).status_code == 200
    assert reads_of(pq_app, seed) == [(USERS["case_manager"], "api_roster")]
    answer = api.get(f"{PATIENTS}/{seed.consenting}/appointments", headers=manager)
    assert answer.status_code == 200
    history = api.get(f"{PATIENTS}/{seed.consenting}/sync-history", headers=manager)
    assert history.status_code == 200

    browser = open_client(pq_app)
    sign_in(browser, "partner_admin")  # opens the roster page
    assert browser.get(f"/patients/{seed.consenting}").status_code == 200

    assert reads_of(pq_app, seed) == [
        (USERS["partner_admin"], "patient_page"),
        # The roster's Needs attention and Since your last visit name residents too.
        (USERS["partner_admin"], "roster_casework"),
        (USERS["partner_admin"], "roster_page"),
        (USERS["case_manager"], "api_sync_history"),
        (USERS["case_manager"], "api_appointments"),
        (USERS["case_manager"], "api_roster"),
    ]
    # Another organisation's patient was not shown to them, so it is not in their record.
    with Session(pq_app.engine) as session:
        manager_id = _user_id(pq_app, "case_manager")
        assert manager_id is not None
        shown = {e.patient_id for e in access_by_user(session, manager_id)}
    assert seed.consenting in shown
    assert seed.other_patient not in shown


def _user_id(pq_app: App, who: str) -> uuid.UUID | None:
    with Session(pq_app.engine) as session:
        return session.scalar(select(PartnerUser.id).filter_by(email=USERS[who]))


def test_a_refused_read_is_not_recorded_as_a_read(pq_app: App, seed: Seed) -> None:
    api = open_client(pq_app)

    hidden = api.get(f"{PATIENTS}/{seed.other_patient}/appointments", headers=seed.bearer("viewer"))

    assert hidden.status_code == 404
    with Session(pq_app.engine) as session:
        assert access_for_patient(session, seed.other_patient) == []


def test_staff_ask_the_record_per_patient_and_per_user_on_a_page_and_partners_cannot(
    pq_app: App, seed: Seed, client: TestClient
) -> None:
    api = open_client(pq_app)
    api.get(f"{PATIENTS}/{seed.consenting}/appointments", headers=seed.bearer("case_manager"))

    sign_in(client, "staff_admin")
    per_patient = client.get("/staff/access", params={"patient": str(seed.consenting)})
    per_user = client.get("/staff/access", params={"user": USERS["case_manager"], "days": 7})
    bad = client.get("/staff/access", params={"patient": "not-an-id"})

    assert per_patient.status_code == 200
    assert USERS["case_manager"] in per_patient.text
    assert "api_appointments" in per_patient.text
    assert per_user.status_code == 200
    assert seed.names[seed.consenting] in per_user.text
    assert bad.status_code == 422
    partner = open_client(pq_app)
    sign_in(partner, "partner_admin")
    refused = partner.get("/staff/access", params={"patient": str(seed.consenting)})
    assert refused.status_code == 403
    assert USERS["case_manager"] not in refused.text


def test_staff_ask_the_record_from_the_command_line(
    seeded_url: str, pq_app: App, seed: Seed
) -> None:
    api = open_client(pq_app)
    api.get(f"{PATIENTS}/{seed.consenting}/appointments", headers=seed.bearer("case_manager"))
    runner = CliRunner(env={"PQSYNC_DATABASE_URL": seeded_url, "PQSYNC_ENV": "test"})

    # The reads happened at the test clock's time (Nov 2025): look back far enough.
    by_patient = runner.invoke(
        cli, ["access", "patient", str(seed.consenting), "--days", "3660", "--json"]
    )
    by_user = runner.invoke(cli, ["access", "user", USERS["case_manager"], "--days", "3660"])
    unknown = runner.invoke(cli, ["access", "patient", "nope"])

    assert by_patient.exit_code == 0, by_patient.output
    reads = json.loads(by_patient.stdout)["reads"]
    assert [(r["user_email"], r["view"]) for r in reads] == [
        (USERS["case_manager"], "api_appointments")
    ]
    assert by_user.exit_code == 0, by_user.output
    assert f"api_appointments  patient {seed.consenting}" in by_user.stdout
    assert unknown.exit_code == 1
    assert unknown.stderr.strip() == "error: the patient id is not a valid id"
