"""People come and go: a deactivated user is refused at once, by session and by token."""

from __future__ import annotations

from fastapi.testclient import TestClient
from typer.testing import CliRunner
from web_support import PASSWORD, USERS, Seed, open_client

from pqsync.bootstrap import App
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
