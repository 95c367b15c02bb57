"""The daily digest, caught by a real SMTP server on loopback (aiosmtpd): a count and a link
to those who opted in, once a morning, and no patient name, email or appointment detail."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from casework_support import DENVER, add_appointments, names
from sqlalchemy import select
from sqlalchemy.orm import Session
from test_alert_mail import Inbox, inbox, text_of
from test_dashboard_pages import sign_in
from web_support import USERS, Seed, open_client

from pqsync.bootstrap import App
from pqsync.db.tables import Patient

__all__ = ["inbox"]  # the fixture, shared with the alert mail tests

BASE_URL = "https://pqsync.example.org"


def test_the_digest_goes_once_a_morning_to_those_who_opted_in_with_no_patient_data(
    build_app: Callable[..., App], seed: Seed, inbox: tuple[Inbox, int]
) -> None:
    mail, port = inbox
    app = build_app(PQSYNC_SMTP_URL=f"smtp://127.0.0.1:{port}", PQSYNC_BASE_URL=BASE_URL)
    clock = app.clock
    clock.now = datetime(2025, 11, 17, 6, 30, tzinfo=DENVER)  # type: ignore[attr-defined]
    add_appointments(
        app,
        {"patient_id": seed.consenting, "start_time": clock() - timedelta(days=2),
         "status": "no_show", "location_name": "Main clinic"},
        {"patient_id": seed.consenting, "start_time": clock() - timedelta(days=4),
         "status": "no_show"},
        # No consent: not counted, as it is not shown.
        {"patient_id": seed.expired, "start_time": clock() - timedelta(days=2),
         "status": "no_show"},
    )  # fmt: skip
    with open_client(app) as client:
        csrf = sign_in(client, "case_manager")
        assert "Send me the daily digest" in client.get("/calendar").text
        chosen = client.post("/digest", data={"csrf_token": csrf, "daily": "yes"})
        assert "You get the daily digest." in chosen.text
    with open_client(app) as client:
        csrf = sign_in(client, "viewer")
        assert "daily digest" not in client.get("/calendar").text
        assert client.post("/digest", data={"csrf_token": csrf, "daily": "yes"}).status_code == 403

    app.jobs.tick()  # 06:30 in Denver: too early
    assert mail.messages == []
    clock.now += timedelta(minutes=35)  # type: ignore[attr-defined]
    app.jobs.tick()
    app.jobs.tick()  # a second worker's tick, or the next minute: still one mail
    assert len(mail.messages) == 1
    message = mail.messages[0]
    body = text_of(message)
    assert message["To"] == USERS["case_manager"]
    assert message["Subject"] == "2 missed appointments need your attention"
    assert f"{BASE_URL}/#attention" in body

    with Session(app.engine) as session:
        patients = list(session.scalars(select(Patient)))
    provider, service = names(app)
    secrets = [p.full_name for p in patients] + [p.email for p in patients]
    secrets += [p.last_name for p in patients] + [p.first_name for p in patients]
    secrets += [provider, service, "Main clinic", "Nov", "AM", "PM", "First Step House"]
    text = f"{message['Subject']}\n{body}"
    assert [s for s in secrets if s in text] == []

    clock.now += timedelta(days=1)  # type: ignore[attr-defined]
    app.jobs.tick()
    assert len(mail.messages) == 2  # the next morning, still waiting: again
    with open_client(app) as client:
        csrf = sign_in(client, "case_manager")
        client.post("/digest", data={"csrf_token": csrf, "daily": "no"})
    clock.now += timedelta(days=1)  # type: ignore[attr-defined]
    app.jobs.tick()
    assert len(mail.messages) == 2  # opted out
