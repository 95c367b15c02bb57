"""Sessions end when idle (30 minutes by default) and at their absolute lifetime; "sign out
everywhere" ends every browser's session; passwords: set from the CLI (prompted), 12
characters at least and not one of the first guessed; the directory file may hold hashes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner
from web_support import PASSWORD, USERS, FakeClock, open_client

from intakeq_sim import SimulatorServer, demo_directory
from pqsync.bootstrap import App
from pqsync.cli import cli
from pqsync.services.passwords import password_problem

ME = "/api/auth/me"


def signed_in(app: App, who: str = "case_manager", password: str = PASSWORD) -> TestClient:
    client = open_client(app)
    answer = client.post("/api/auth/login", json={"email": USERS[who], "password": password})
    assert answer.status_code == 200, answer.text
    return client


def test_an_idle_session_expires(pq_app: App, clock: FakeClock) -> None:
    browser = signed_in(pq_app)

    clock.advance(minutes=29)
    assert browser.get(ME).status_code == 200  # used: the idle time starts again
    clock.advance(minutes=29)
    assert browser.get(ME).status_code == 200
    clock.advance(minutes=31)

    assert browser.get(ME).status_code == 401


def test_a_busy_session_still_ends_at_its_absolute_lifetime(pq_app: App, clock: FakeClock) -> None:
    browser = signed_in(pq_app)
    for _ in range(11 * 3):  # every 20 minutes for 11 hours
        clock.advance(minutes=20)
        assert browser.get(ME).status_code == 200
    clock.advance(hours=1, minutes=1)

    assert browser.get(ME).status_code == 401


def test_the_idle_timeout_is_a_setting(build_app: object, clock: FakeClock) -> None:
    app = build_app(PQSYNC_SESSION_IDLE_MINUTES=5)  # type: ignore[operator]
    browser = signed_in(app)

    clock.advance(minutes=6)

    assert browser.get(ME).status_code == 401


def test_sign_out_everywhere_ends_every_browsers_session(pq_app: App) -> None:
    office = signed_in(pq_app)
    house = signed_in(pq_app)
    csrf = office.get(ME).json()["csrfToken"]

    answer = office.post("/api/auth/logout-everywhere", headers={"X-CSRF-Token": csrf})

    assert answer.status_code == 204
    assert house.get(ME).status_code == 401
    assert office.get(ME).status_code == 401
    assert signed_in(pq_app).get(ME).status_code == 200  # signing in again works


def test_set_password_is_prompted_checked_and_ends_open_sessions(
    seeded_url: str, pq_app: App
) -> None:
    runner = CliRunner(env={"PQSYNC_DATABASE_URL": seeded_url, "PQSYNC_ENV": "test"})
    browser = signed_in(pq_app)
    email = USERS["case_manager"]

    common = runner.invoke(
        cli, ["users", "set-password", email], input="password1234\npassword1234\n"
    )
    short = runner.invoke(cli, ["users", "set-password", email], input="short\nshort\n")
    done = runner.invoke(
        cli, ["users", "set-password", email], input="blue kettle at noon\nblue kettle at noon\n"
    )

    assert common.exit_code == 1 and "first ones guessed" in common.stderr
    assert short.exit_code == 1 and "at least 12" in short.stderr
    assert done.exit_code == 0, done.output
    assert "blue kettle" not in done.stdout
    assert "1 open session(s) ended" in done.stdout
    assert browser.get(ME).status_code == 401
    old = open_client(pq_app).post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert old.status_code == 401
    assert signed_in(pq_app, password="blue kettle at noon").get(ME).status_code == 200


@pytest.mark.parametrize(
    "password",
    ["password1234", "123456789012", "aaaaaaaaaaaaaa", "Qwerty123456!", "passwordpassword"],
)
def test_common_passwords_are_refused(password: str) -> None:
    assert password_problem(password) is not None


def test_a_good_password_passes() -> None:
    assert password_problem("blue kettle at noon") is None


def test_the_directory_file_may_hold_a_password_hash_instead_of_a_password(
    seeded_url: str, pq_app: App, simulator: SimulatorServer, tmp_path: Path
) -> None:
    runner = CliRunner(env={"PQSYNC_DATABASE_URL": seeded_url, "PQSYNC_ENV": "test"})
    made = runner.invoke(
        cli, ["users", "hash-password"], input="a hashed new password\na hashed new password\n"
    )
    assert made.exit_code == 0, made.output
    hashed = made.stdout.strip().splitlines()[-1]  # after the prompts
    assert hashed.startswith("$argon2id$")
    directory = demo_directory(simulator.dataset)
    for user in directory["partner_users"]:
        if user["email"] == USERS["viewer"]:
            user.pop("password", None)
            user["password_hash"] = hashed
    path = tmp_path / "directory.json"
    path.write_text(json.dumps(directory), encoding="utf-8")

    result = runner.invoke(cli, ["directory", "import", str(path)])

    assert result.exit_code == 0, result.output
    assert signed_in(pq_app, "viewer", "a hashed new password").get(ME).status_code == 200
