"""A one-time password reset link that staff issue (printed, or mailed when SMTP is set):
it sets a checked password once, ends the user's sessions, then stops working."""

from __future__ import annotations

from test_alert_mail import Inbox, inbox, text_of  # noqa: F401 - the fixture
from typer.testing import CliRunner
from web_support import PASSWORD, USERS, open_client

from pqsync.bootstrap import App
from pqsync.cli_web import users_cli

NEW = "moss on the north wall"


def cli_on(url: str, **env: str) -> CliRunner:
    return CliRunner(env={"PQSYNC_DATABASE_URL": url, "PQSYNC_ENV": "test", **env})


def test_a_reset_link_sets_a_checked_password_once_and_ends_open_sessions(
    seeded_url: str, pq_app: App
) -> None:
    email = USERS["viewer"]
    signed_in = open_client(pq_app)
    assert signed_in.post("/api/auth/login", json={"email": email, "password": PASSWORD}).is_success
    issued = cli_on(seeded_url).invoke(users_cli, ["reset-link", email])
    assert issued.exit_code == 0, issued.output
    link = issued.stdout.strip()
    assert link.startswith("http://127.0.0.1:8000/reset/")
    path = link.removeprefix("http://127.0.0.1:8000")
    browser = open_client(pq_app)

    form = browser.get(path)
    differ = browser.post(path, data={"password": NEW, "again": NEW + "x"})
    common = browser.post(path, data={"password": "password1234", "again": "password1234"})
    done = browser.post(path, data={"password": NEW, "again": NEW}, follow_redirects=False)
    again = browser.get(path)

    assert form.status_code == 200 and "Set your password" in form.text
    assert differ.status_code == 422 and "differ" in differ.text
    assert common.status_code == 422 and "first ones guessed" in common.text
    assert done.status_code == 303 and done.headers["location"] == "/login"
    assert again.status_code == 404 and "expired or was used" in again.text
    assert signed_in.get("/api/auth/me").status_code == 401
    fresh = open_client(pq_app)
    assert fresh.post("/api/auth/login", json={"email": email, "password": NEW}).is_success


def test_the_link_is_mailed_when_smtp_is_set(
    seeded_url: str,
    pq_app: App,
    inbox: tuple[Inbox, int],  # noqa: F811 - the fixture imported above
) -> None:
    mailbox, port = inbox
    runner = cli_on(
        seeded_url,
        PQSYNC_SMTP_URL=f"smtp://127.0.0.1:{port}",
        PQSYNC_BASE_URL="https://dash.clinic.example",
    )

    result = runner.invoke(users_cli, ["reset-link", USERS["case_manager"], "--mail"])

    assert result.exit_code == 0, result.output
    assert "/reset/" not in result.stdout  # the link went to the user only
    (message,) = mailbox.messages
    assert message["To"] == USERS["case_manager"]
    body = text_of(message)
    link = next(line for line in body.splitlines() if "/reset/" in line)
    assert link.startswith("https://dash.clinic.example/reset/")
    page = open_client(pq_app).get(link.removeprefix("https://dash.clinic.example"))
    assert page.status_code == 200
