"""Failure alerts by mail, against a real SMTP server on loopback (aiosmtpd): one mail per
failure streak, one on recovery, none while healthy, never a patient's data."""

from __future__ import annotations

import html
import socket
from collections.abc import Callable, Iterator

import pytest
from aiosmtpd.controller import Controller
from mail_support import Inbox, smtp_server, text_of
from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession
from web_support import PASSWORD, USERS, FakeClock, Seed, open_client, unreachable_intakeq

from pqsync.bootstrap import App
from pqsync.db.tables import Alert, Patient

ALERT_TO = "ops@clinic.example"


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    with smtp_server() as server:
        yield server


def org_sync(app: App, seed: Seed) -> int:
    with open_client(app) as client:
        response = client.post(
            f"/api/partner-dashboard/organizations/{seed.orgs['own']}/sync-all-patients",
            headers=seed.bearer("partner_admin"),
        )
    return response.status_code


def test_three_failures_make_one_alert_and_the_recovery_one_more_with_no_patient_data(
    build_app: Callable[..., App], seed: Seed, inbox: tuple[Inbox, int]
) -> None:
    mail, port = inbox
    smtp = {"PQSYNC_SMTP_URL": f"smtp://127.0.0.1:{port}", "PQSYNC_ALERT_EMAILS": ALERT_TO}
    healthy = build_app(**smtp)
    broken = build_app(intakeq=unreachable_intakeq(), **smtp)

    assert org_sync(healthy, seed) == 200
    assert mail.messages == []  # healthy: no mail

    assert [org_sync(broken, seed) for _ in range(3)] == [502, 502, 502]
    assert len(mail.messages) == 1
    alert = mail.messages[0]
    body = text_of(alert)
    assert alert["To"] == ALERT_TO
    assert "failed" in alert["Subject"]
    assert "First Step House" in alert["Subject"]
    assert "Organisation: First Step House" in body
    assert "Patients in the run: 12" in body
    assert "IntakeQ could not be reached" in body
    with DbSession(healthy.engine) as session:
        first_failure = session.scalars(select(Alert).where(Alert.kind == "failure")).one()
        assert first_failure.delivery == "email"
        assert f"/api/partner-dashboard/sync-runs/{first_failure.run_id}" in body

    assert org_sync(healthy, seed) == 200
    assert org_sync(healthy, seed) == 200
    assert len(mail.messages) == 2
    recovery = mail.messages[1]
    assert "works again" in recovery["Subject"]

    with DbSession(healthy.engine) as session:
        patients = list(session.scalars(select(Patient)))
    secrets = [p.full_name for p in patients] + [p.email for p in patients]
    secrets += [p.last_name for p in patients]
    for message in mail.messages:
        text = f"{message['Subject']}\n{text_of(message)}"
        assert not [s for s in secrets if s in text]


def test_without_smtp_an_alert_is_logged_and_kept_for_the_staff_page(
    build_app: Callable[..., App], seed: Seed
) -> None:
    broken = build_app(intakeq=unreachable_intakeq())

    assert org_sync(broken, seed) == 502

    with DbSession(broken.engine) as session:
        alerts = list(session.scalars(select(Alert)))
    assert [(a.kind, a.delivery) for a in alerts] == [("failure", "log")]
    assert "First Step House" in alerts[0].subject
    # The staff page is where it is read.
    with open_client(broken) as client:
        signed_in = client.post(
            "/api/auth/login", json={"email": USERS["staff_admin"], "password": PASSWORD}
        )
        assert signed_in.status_code == 200
        page = client.get("/staff/runs")
    assert page.status_code == 200
    section = page.text.split('id="alerts-title"', 1)[1].split("</section>", 1)[0]
    assert alerts[0].subject in html.unescape(section)
    assert "no email set up" in section
    assert f'href="/staff/runs/{alerts[0].run_id}"' in section


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def deliveries(app: App) -> list[tuple[str, str, int]]:
    with DbSession(app.engine) as session:
        alerts = session.scalars(select(Alert).order_by(Alert.created_at))
        return [(a.kind, a.delivery, a.attempts) for a in alerts]


def test_smtp_down_then_up_the_alert_arrives_and_then_the_recovery(
    build_app: Callable[..., App], seed: Seed, clock: FakeClock
) -> None:
    port = free_port()  # nothing listens there yet: the mail server is down
    smtp = {"PQSYNC_SMTP_URL": f"smtp://127.0.0.1:{port}", "PQSYNC_ALERT_EMAILS": ALERT_TO}
    healthy = build_app(**smtp)
    broken = build_app(intakeq=unreachable_intakeq(), **smtp)

    assert org_sync(broken, seed) == 502
    assert deliveries(broken) == [("failure", "retrying", 1)]
    clock.advance(minutes=1)
    broken.jobs.tick()  # still down: tried again, later again
    assert deliveries(broken) == [("failure", "retrying", 2)]

    mail = Inbox()
    controller = Controller(mail, hostname="127.0.0.1", port=port)
    controller.start()  # the mail server is back
    try:
        clock.advance(minutes=2)
        broken.jobs.tick()
        assert len(mail.messages) == 1
        assert "failed (First Step House)" in mail.messages[0]["Subject"]
        assert deliveries(broken) == [("failure", "email", 3)]
        assert org_sync(healthy, seed) == 200
    finally:
        controller.stop()
    assert "works again" in mail.messages[-1]["Subject"]


def test_no_recovery_mail_without_a_delivered_failure_mail(
    build_app: Callable[..., App], seed: Seed, clock: FakeClock
) -> None:
    smtp = {"PQSYNC_SMTP_URL": f"smtp://127.0.0.1:{free_port()}", "PQSYNC_ALERT_EMAILS": ALERT_TO}
    healthy = build_app(**smtp)
    broken = build_app(intakeq=unreachable_intakeq(), **smtp)

    assert org_sync(broken, seed) == 502
    assert org_sync(healthy, seed) == 200  # it works again before the failure mail went out

    # The failure mail is not sent late, and no "works again" follows a mail never received.
    assert deliveries(healthy) == [("failure", "cancelled", 1)]
    with open_client(healthy) as client:
        client.post("/api/auth/login", json={"email": USERS["staff_admin"], "password": PASSWORD})
        page = client.get("/staff/runs")
    assert "not sent: it worked again before the email could go out" in page.text


def test_an_alert_mail_that_never_goes_through_is_given_up_and_shown(
    build_app: Callable[..., App], seed: Seed, clock: FakeClock
) -> None:
    smtp = {"PQSYNC_SMTP_URL": f"smtp://127.0.0.1:{free_port()}", "PQSYNC_ALERT_EMAILS": ALERT_TO}
    broken = build_app(intakeq=unreachable_intakeq(), **smtp)

    assert org_sync(broken, seed) == 502
    for _ in range(30):
        clock.advance(hours=1)
        broken.jobs.tick()

    # The first alert is the organisation sync's (the ticks' own nightly runs add more).
    assert deliveries(broken)[0] == ("failure", "failed", 10)
    with open_client(broken) as client:
        client.post("/api/auth/login", json={"email": USERS["staff_admin"], "password": PASSWORD})
        page = client.get("/staff/runs")
    assert "the email could not be sent (10 tries; given up)" in page.text
