"""Accuracy as staff and monitoring see it: the weekly verification runs on the schedule,
a row changed behind pqsync's back is named on `/staff/runs` and in `/metrics`, and one
alert mail (real SMTP) goes out per streak of discrepancies, never with a patient's data."""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from email.message import Message

import pytest
from mail_support import Inbox, smtp_server, text_of
from sqlalchemy import select
from sqlalchemy.orm import Session
from web_support import METRICS_TOKEN, PASSWORD, USERS, FakeClock, Seed, open_client

from pqsync.bootstrap import App
from pqsync.db.tables import Alert, Appointment, Patient, Verification

ORG = "first-step-house"
ALERT_TO = "ops@clinic.example"
METRICS_AUTH = {"Authorization": f"Bearer {METRICS_TOKEN}"}


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    with smtp_server() as server:
        yield server


def staff_page(app: App) -> str:
    with open_client(app) as client:
        signed_in = client.post(
            "/api/auth/login", json={"email": USERS["staff_admin"], "password": PASSWORD}
        )
        assert signed_in.status_code == 200
        page = client.get("/staff/runs")
    assert page.status_code == 200
    return page.text.split('id="accuracy"', 1)[1].split("</section>", 1)[0]


def text(markup: str) -> str:
    """What a reader sees of some markup: its text, spaces collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", markup)).split()).replace(" ,", ",")


def accuracy_mail(inbox: Inbox) -> list[Message]:
    """The verification's mails (the ticks also report, say, last night's missed runs)."""
    return [m for m in inbox.messages if "IntakeQ" in m["Subject"]]


def metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert found is not None, name
    return float(found.group(1))


def test_the_schedule_verifies_weekly_and_a_tampered_row_is_named_shown_and_alerted_once(
    build_app: Callable[..., App], seed: Seed, clock: FakeClock, inbox: tuple[Inbox, int]
) -> None:
    mail, port = inbox
    app = build_app(PQSYNC_SMTP_URL=f"smtp://127.0.0.1:{port}", PQSYNC_ALERT_EMAILS=ALERT_TO)
    assert "Not measured yet" in text(staff_page(app))
    assert app.sync_service().sync_organization(ORG).status == "success"

    # Saturday 14:03 in Denver: not due. Sunday 04:00: the worker's tick queues it.
    app.jobs.tick()
    app.jobs.drain()
    with Session(app.engine) as session:
        assert session.scalars(select(Verification)).all() == []
    clock.advance(hours=13, minutes=57)
    app.jobs.tick()
    app.jobs.drain()
    app.jobs.tick()  # a second tick (or worker) in the same week starts nothing more
    app.jobs.drain()
    with Session(app.engine) as session:
        weekly = session.scalars(select(Verification)).one()
    assert (weekly.triggered_by, weekly.status, weekly.slot) == (
        "schedule",
        "accurate",
        "weekly:2025-11-16",
    )
    compared = weekly.compared
    assert compared > 100
    shown = text(staff_page(app))
    assert f"Accuracy 100.0% ({compared:,} appointments compared, Sun 04:00)" in shown
    assert accuracy_mail(mail) == []

    # A minute later someone edits a stored row behind pqsync's back.
    clock.advance(minutes=1)
    with Session(app.engine) as session, session.begin():
        row = session.scalars(
            select(Appointment).where(Appointment.patient_id == seed.consenting).limit(1)
        ).one()
        tampered = row.pq_appointment_id
        true_start = row.start_time
        row.start_time = true_start + timedelta(hours=1)
    for _ in range(2):  # two verifications in a row: one streak, one mail
        result = app.verifier().verify(ORG)
        assert [(d.appointment_id, d.kind) for d in result.discrepancies] == [(tampered, "stale")]

    markup = staff_page(app)
    section = text(markup)
    percent = 100.0 * (compared - 1) / compared
    assert f"Accuracy {percent:.1f}% ({compared:,} appointments compared, Sun 04:01)" in section
    assert "0 missing, 0 extra, 1 stale" in section
    assert tampered in section
    assert f'href="/patients/{seed.consenting}"' in markup
    assert f"start_time: {(true_start + timedelta(hours=1)).isoformat()}" in section
    assert f"-> {true_start.isoformat()}" in section
    assert seed.names[seed.consenting] not in section  # by id, never by name

    with open_client(app) as client:
        metrics = client.get("/metrics", headers=METRICS_AUTH).text
    assert metric(metrics, "pqsync_accuracy_ratio") == pytest.approx((compared - 1) / compared)
    assert metric(metrics, "pqsync_accuracy_compared") == compared
    assert metric(metrics, 'pqsync_accuracy_discrepancies{kind="stale"}') == 1.0
    assert metric(metrics, 'pqsync_accuracy_discrepancies{kind="missing"}') == 0.0

    assert len(accuracy_mail(mail)) == 1
    alert = accuracy_mail(mail)[0]
    body = text_of(alert)
    assert alert["To"] == ALERT_TO
    assert "differ from IntakeQ" in alert["Subject"]
    assert "First Step House" in alert["Subject"]
    assert "0 missing, 0 extra, 1 stale" in body
    assert "/staff/runs#accuracy" in body
    with Session(app.engine) as session:
        patients = list(session.scalars(select(Patient)))
        alerts = list(session.scalars(select(Alert)))
    assert [(a.kind, a.delivery) for a in alerts if a.key.startswith("verify:")] == [
        ("discrepancy", "email")
    ]
    secrets = [p.full_name for p in patients] + [p.email for p in patients]
    assert not [s for s in secrets if s in f"{alert['Subject']}\n{body}"]

    # The next sync repairs it; the verification after says so, once.
    assert app.sync_service().sync_organization(ORG).status == "success"
    clock.advance(minutes=1)
    assert app.verifier().verify(ORG).accuracy == 100.0
    assert len(accuracy_mail(mail)) == 2
    assert "match IntakeQ again" in accuracy_mail(mail)[1]["Subject"]
    with open_client(app) as client:
        metrics = client.get("/metrics", headers=METRICS_AUTH).text
    assert metric(metrics, "pqsync_accuracy_ratio") == 1.0


def test_a_weekly_verification_the_budget_cannot_cover_is_skipped_and_tried_hourly(
    build_app: Callable[..., App], seed: Seed, clock: FakeClock
) -> None:
    app = build_app(INTAKEQ_DAILY_LIMIT=50)
    clock.advance(hours=13, minutes=57)  # Sunday 04:00 in Denver

    def tries() -> list[tuple[str, int, str | None]]:
        app.jobs.tick()
        app.jobs.drain()
        with Session(app.engine) as session:
            return [
                (v.status, v.requests_made, v.error_message)
                for v in session.scalars(select(Verification).order_by(Verification.started_at))
            ]

    first = tries()
    assert [(status, sent) for status, sent, _why in first] == [("skipped", 0)]
    assert "not enough of today's IntakeQ requests" in str(first[0][2])
    clock.advance(minutes=30)
    assert len(tries()) == 1  # not again within the hour
    clock.advance(minutes=31)
    assert [status for status, _sent, _why in tries()] == ["skipped", "skipped"]
    clock.advance(days=1)
    assert len(tries()) == 2  # a day later the week's slot has passed
