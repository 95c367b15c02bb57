"""`pqsync patients export ID` gives everything about one patient (and is recorded);
`pqsync patients erase ID` removes their identifiers and keeps the audit trail."""

from __future__ import annotations

import json

from sqlalchemy.orm import Session
from typer.testing import CliRunner
from web_support import Seed, open_client

from pqsync.bootstrap import App
from pqsync.cli import cli
from pqsync.services.access import access_for_patient

PATIENTS = "/api/partner-dashboard/patients"


def test_export_then_erase_keeps_the_history_and_removes_the_identifiers(
    seeded_url: str, pq_app: App, seed: Seed
) -> None:
    api = open_client(pq_app)
    synced = api.post(f"{PATIENTS}/{seed.consenting}/sync", headers=seed.bearer("case_manager"))
    assert synced.status_code == 200
    runner = CliRunner(env={"PQSYNC_DATABASE_URL": seeded_url, "PQSYNC_ENV": "test"})
    name = seed.names[seed.consenting]

    exported = runner.invoke(cli, ["patients", "export", str(seed.consenting)])
    unconfirmed = runner.invoke(cli, ["patients", "erase", str(seed.consenting)])
    erased = runner.invoke(cli, ["patients", "erase", str(seed.consenting), "--yes"])
    after = runner.invoke(cli, ["patients", "export", str(seed.consenting)])

    assert exported.exit_code == 0, exported.output
    before = json.loads(exported.stdout)
    assert f"{before['patient']['first_name']} {before['patient']['last_name']}" == name
    assert before["appointments"] and before["change_history"]
    assert [a["organization"] for a in before["affiliations"]] == ["first-step-house"]
    assert unconfirmed.exit_code == 1
    assert erased.exit_code == 0, erased.output
    kept = json.loads(after.stdout)
    assert name.split()[0] not in after.stdout
    assert kept["patient"]["email"].endswith("@erased.invalid")
    assert kept["patient"]["date_of_birth"] is None
    assert kept["appointments"] == [] and kept["affiliations"] == []
    assert len(kept["change_history"]) == len(before["change_history"]) + 1
    assert kept["change_history"][-1]["type"] == "patient_erased"
    assert {"export", "api_sync_patient"} <= {r["view"] for r in kept["access_record"]}
    # The partner no longer sees the patient.
    roster = api.get(PATIENTS, params={"limit": 200}, headers=seed.bearer("partner_admin"))
    assert str(seed.consenting) not in {row["id"] for row in roster.json()["patients"]}
    with Session(pq_app.engine) as session:
        views = [e.view for e in access_for_patient(session, seed.consenting)]
    assert views.count("export") == 2


def test_an_unknown_patient_is_one_line(seeded_url: str) -> None:
    runner = CliRunner(env={"PQSYNC_DATABASE_URL": seeded_url, "PQSYNC_ENV": "test"})

    result = runner.invoke(cli, ["patients", "export", "00000000-0000-0000-0000-000000000000"])

    assert result.exit_code == 1
    assert result.stderr.strip() == "error: no patient with that id"
