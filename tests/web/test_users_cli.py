"""`pqsync users create|token|revoke`: one clear line and exit 1 for bad input; tokens are
shown once and stored only as SHA-256."""

from __future__ import annotations

import hashlib

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from pqsync.bootstrap import App
from pqsync.cli_web import users_cli
from pqsync.db.tables import ApiToken, PartnerUser


def cli_on(url: str) -> CliRunner:
    return CliRunner(env={"PQSYNC_DATABASE_URL": url, "PQSYNC_ENV": "test"})


@pytest.fixture
def run_cli(seeded_url: str) -> CliRunner:
    return cli_on(seeded_url)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--role", "owner", "--org", "first-step-house"], "--role must be one of"),
        (["--role", "viewer", "--org", "nowhere"], "no such organization: nowhere"),
        (["--role", "viewer"], "--org is required for role viewer"),
        (["--role", "staff_admin", "--org", "first-step-house"], "a staff_admin belongs to no"),
        (["--role", "viewer", "--org", "first-step-house", "--password", "short"], "at least 12"),
    ],
)
def test_create_refuses_bad_input_with_one_line(
    module_url: str, arguments: list[str], message: str
) -> None:
    result = cli_on(module_url).invoke(
        users_cli,
        ["create", "--email", "new@firststephouse.org", "--password", "long enough pw", *arguments],
    )

    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_create_asks_for_the_password_and_the_user_can_log_in(
    run_cli: CliRunner, client: TestClient
) -> None:
    result = run_cli.invoke(
        users_cli,
        ["create", "--email", "New@FirstStepHouse.org", "--role", "viewer", "--org",
         "first-step-house", "--name", "Nia New"],
        input="a new password\na new password\n",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert "a new password" not in result.stdout
    login = client.post(
        "/api/auth/login", json={"email": "new@firststephouse.org", "password": "a new password"}
    )
    assert login.status_code == 200
    assert login.json()["user"]["name"] == "Nia New"


def test_a_duplicate_email_is_refused(module_url: str) -> None:
    result = cli_on(module_url).invoke(
        users_cli,
        ["create", "--email", "viewer@firststephouse.org", "--role", "viewer", "--org",
         "first-step-house", "--password", "long enough pw"],
    )  # fmt: skip

    assert result.exit_code == 1
    assert result.stderr.strip() == "error: a user with that email already exists"


def test_a_token_is_printed_once_stored_hashed_and_revocable(
    run_cli: CliRunner, client: TestClient, pq_app: App
) -> None:
    issued = run_cli.invoke(users_cli, ["token", "viewer@firststephouse.org"])
    token = issued.stdout.strip()

    me = client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
    revoked = run_cli.invoke(users_cli, ["revoke", "viewer@firststephouse.org"])
    after = client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})

    assert issued.exit_code == 0
    assert token.startswith("pqs_") and len(token) > 40
    assert me.status_code == 200
    assert revoked.exit_code == 0
    assert "revoked 2 token(s)" in revoked.stdout  # this one and the seeded one
    assert after.status_code == 401
    with Session(pq_app.engine) as session:
        user_id = session.scalar(
            select(PartnerUser.id).filter_by(email="viewer@firststephouse.org")
        )
        hashes = set(session.scalars(select(ApiToken.token_hash).filter_by(user_id=user_id)))
    assert hashlib.sha256(token.encode()).hexdigest() in hashes
    assert token not in hashes


def test_token_for_an_unknown_user_fails_with_one_line(module_url: str) -> None:
    result = cli_on(module_url).invoke(users_cli, ["token", "nobody@nowhere.example"])

    assert result.exit_code == 1
    assert result.stderr.strip() == "error: no user with that email"
