"""People come and go: a deactivated user is refused at once, by session and by token."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from typer.testing import CliRunner
from web_support import PASSWORD, USERS, Seed, open_client

from intakeq_sim import SimulatorServer, demo_directory
from pqsync.bootstrap import App
from pqsync.cli import cli
from pqsync.cli_web import users_cli

ME = "/api/auth/me"
ROSTER = "/api/partner-dashboard/patients"


def cli_on(url: str) -> CliRunner:
    return CliRunner(env={"PQSYNC_DATABASE_URL": url, "PQSYNC_ENV": "test"})


def test_a_deactivated_users_open_session_and_token_get_401_on_the_next_request(
    seeded_url: str, pq_app: App, seed: Seed
) -> None:
    browser = open_client(pq_app)
    login = browser.post(
        "/api/auth/login", json={"email": USERS["case_manager"], "password": PASSWORD}
    )
    assert login.status_code == 200
    api = open_client(pq_app)
    assert browser.get(ROSTER).status_code == 200
    assert api.get(ROSTER, headers=seed.bearer("case_manager")).status_code == 200

    result = cli_on(seeded_url).invoke(users_cli, ["deactivate", USERS["case_manager"]])

    assert result.exit_code == 0, result.output
    assert "1 session(s) ended, 1 token(s) revoked" in result.stdout
    assert browser.get(ROSTER).status_code == 401
    assert browser.get(ME).status_code == 401
    assert api.get(ROSTER, headers=seed.bearer("case_manager")).status_code == 401
    again = browser.post(
        "/api/auth/login", json={"email": USERS["case_manager"], "password": PASSWORD}
    )
    assert again.status_code == 401
    # Others are untouched.
    assert api.get(ROSTER, headers=seed.bearer("partner_admin")).status_code == 200


def test_deactivating_an_unknown_user_says_so_in_one_line(seeded_url: str) -> None:
    result = cli_on(seeded_url).invoke(users_cli, ["deactivate", "nobody@example.org"])

    assert result.exit_code == 1
    assert result.stderr.strip() == "error: no user with that email"


def test_a_new_token_is_refused_for_a_deactivated_user(seeded_url: str, client: TestClient) -> None:
    assert cli_on(seeded_url).invoke(users_cli, ["deactivate", USERS["viewer"]]).exit_code == 0

    result = cli_on(seeded_url).invoke(users_cli, ["token", USERS["viewer"]])

    assert result.exit_code == 1
    assert "deactivated" in result.stderr


def _roster_ids(client: TestClient, headers: dict[str, str]) -> set[str]:
    response = client.get(ROSTER, params={"limit": 200}, headers=headers)
    assert response.status_code == 200
    return {row["id"] for row in response.json()["patients"]}


def _directory_without(
    simulator: SimulatorServer, tmp_path: Path, patient_id: uuid.UUID, user: str
) -> tuple[Path, dict[str, Any]]:
    directory = demo_directory(simulator.dataset)
    emails = {p["id"]: p["email"] for p in directory["patients"]}
    gone = emails[str(patient_id)]
    directory["affiliations"] = [a for a in directory["affiliations"] if a["patient"] != gone]
    directory["partner_users"] = [u for u in directory["partner_users"] if u["email"] != user]
    path = tmp_path / "directory.json"
    path.write_text(json.dumps(directory), encoding="utf-8")
    return path, directory


def test_a_pruned_directory_ends_the_affiliation_and_the_partner_no_longer_sees_the_patient(
    seeded_url: str, pq_app: App, seed: Seed, simulator: SimulatorServer, tmp_path: Path
) -> None:
    api = open_client(pq_app)
    admin = seed.bearer("partner_admin")
    assert str(seed.consenting) in _roster_ids(api, admin)
    path, _ = _directory_without(simulator, tmp_path, seed.consenting, USERS["case_manager"])
    runner = cli_on(seeded_url)

    plain = runner.invoke(cli, ["directory", "import", str(path)])
    assert plain.exit_code == 0, plain.output
    assert "0 ended" in plain.stdout
    assert str(seed.consenting) in _roster_ids(api, admin)

    dry = runner.invoke(cli, ["directory", "import", "--prune", "--dry-run", str(path)])
    assert dry.exit_code == 0, dry.output
    assert f"would end: affiliation of patient {seed.consenting}" in dry.stdout
    assert str(seed.consenting) in _roster_ids(api, admin)

    pruned = runner.invoke(cli, ["directory", "import", "--prune", str(path)])

    assert pruned.exit_code == 0, pruned.output
    assert f"ended: affiliation of patient {seed.consenting} with first-step-house" in (
        pruned.stdout
    )
    assert f"ended: user {USERS['case_manager']} deactivated" in pruned.stdout
    assert "2 ended" in pruned.stdout
    assert str(seed.consenting) not in _roster_ids(api, admin)
    gone = api.get(f"{ROSTER}/{seed.consenting}/appointments", headers=admin)
    assert gone.status_code == 404
    assert api.get(ROSTER, headers=seed.bearer("case_manager")).status_code == 401
    # Another organisation's people are not touched by a file that does not list it.
    assert api.get(ROSTER, headers=seed.bearer("other_org_admin")).status_code == 200
    # Staff still see the patient, and the end is in the patient's change history.
    staff = api.get(f"{ROSTER}/{seed.consenting}/appointments", headers=seed.bearer("staff_admin"))
    assert staff.status_code == 200


def test_the_file_can_end_an_affiliation_and_a_user_by_date_and_by_active_false(
    seeded_url: str, pq_app: App, seed: Seed, simulator: SimulatorServer, tmp_path: Path
) -> None:
    directory = demo_directory(simulator.dataset)
    emails = {p["id"]: p["email"] for p in directory["patients"]}
    for affiliation in directory["affiliations"]:
        if affiliation["patient"] == emails[str(seed.consenting)]:
            affiliation["ended_on"] = "2025-11-01"
        if affiliation["patient"] == emails[str(seed.expired)]:
            affiliation["ended_on"] = "2099-01-01"  # still ahead: nothing ends yet
    for user in directory["partner_users"]:
        if user["email"] == USERS["viewer"]:
            user["active"] = False
    path = tmp_path / "directory.json"
    path.write_text(json.dumps(directory), encoding="utf-8")

    result = cli_on(seeded_url).invoke(cli, ["directory", "import", str(path)])

    assert result.exit_code == 0, result.output
    api = open_client(pq_app)
    shown = _roster_ids(api, seed.bearer("partner_admin"))
    assert str(seed.consenting) not in shown
    assert str(seed.expired) in shown
    assert api.get(ROSTER, headers=seed.bearer("viewer")).status_code == 401


def test_a_read_only_staff_user_sees_every_organisation_but_may_not_sync(
    seeded_url: str, pq_app: App, seed: Seed
) -> None:
    runner = cli_on(seeded_url)
    created = runner.invoke(
        users_cli,
        ["create", "--email", "auditor@clinic.example", "--role", "staff_viewer",
         "--password", "a long enough password"],
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    token = runner.invoke(users_cli, ["token", "auditor@clinic.example"]).stdout.strip()
    api = open_client(pq_app)
    auditor = {"Authorization": f"Bearer {token}"}

    shown = _roster_ids(api, auditor)
    sync = api.post(f"{ROSTER}/{seed.consenting}/sync", headers=auditor)
    runs = api.get("/api/admin/sync-runs", headers=auditor)

    assert {str(seed.consenting), str(seed.other_patient)} <= shown
    assert sync.status_code == 403
    assert runs.status_code == 200
