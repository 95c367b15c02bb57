"""Issue 24's partner-facing gaps, as a person sees them: the sign-in form fits a phone,
partners see who an appointment is with as staff do, the roster's provider column is the
next appointment's and says so, and a patient PracticeQ does not know is told plainly."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from browser_support import fits_width, sign_in
from playwright.sync_api import Page, expect
from sqlalchemy import select
from sqlalchemy.orm import Session
from test_accessibility_browser import blocking_violations
from web_support import Seed

from intakeq_sim import SimulatorServer
from pqsync.bootstrap import App
from pqsync.db.tables import Patient


def test_the_sign_in_fields_fit_inside_the_screen(new_page: Callable[[], Page]) -> None:
    page = new_page()
    page.goto("/login")
    width = page.viewport_size["width"] if page.viewport_size else 0
    for label in ("Email", "Password"):
        box = page.get_by_label(label).bounding_box()
        assert box is not None, label
        assert box["x"] >= 0 and box["x"] + box["width"] <= width, (label, box, width)
    # A case manager's address is shown whole, not cut off inside the field.
    email = page.get_by_label("Email")
    email.fill("beth.rodriguez@firststephouse.org")
    inner = email.evaluate("e => [e.scrollWidth, e.clientWidth]")
    assert inner[0] <= inner[1], inner
    button = page.get_by_role("button", name="Sign in").bounding_box()
    assert button is not None and button["x"] + button["width"] <= width
    assert fits_width(page)
    assert blocking_violations(page) == []


UNMAPPED_PRACTITIONER = "5f1a2b3c4d5e6f7a8b9c0d99"  # the simulator's locum, in no directory


def book(simulator: SimulatorServer, pq_app: App, patient: uuid.UUID, **fields: Any) -> Any:
    """A provider books in IntakeQ (the simulator); answers IntakeQ's record."""
    with Session(pq_app.engine) as session:
        client_id = session.scalars(select(Patient.intakeq_client_id).filter_by(id=patient)).one()
    booked = httpx.post(
        f"{simulator.control_url}/appointments", json={"ClientId": client_id, **fields}
    )
    assert booked.status_code == 200, booked.text
    return booked.json()


def test_partners_see_the_practitioner_staff_see_when_no_provider_is_mapped(
    new_page: Callable[[], Page], seed: Seed, simulator: SimulatorServer, pq_app: App
) -> None:
    record = book(
        simulator,
        pq_app,
        seed.consenting,
        StartDateLocal="2026-01-29T07:15:00",
        PractitionerId=UNMAPPED_PRACTITIONER,
    )
    name = record["PractitionerName"]
    assert name
    pq_app.sync_service().sync_patient(str(seed.consenting))

    shown: dict[str, set[str]] = {}
    for who in ("staff_admin", "case_manager"):
        page = sign_in(new_page(), who)
        page.goto(f"/patients/{seed.consenting}")
        upcoming = page.get_by_role("region", name="Upcoming appointments")
        line = upcoming.locator(".appointment", has_text="Jan 29, 2026 at 7:15 AM")
        # (the simulator lives for the whole session: each width's test books one more)
        expect(line.first).to_be_visible()
        shown[who] = {text.strip() for text in line.locator(".who").all_inner_texts()}
    assert shown == {"staff_admin": {name}, "case_manager": {name}}


UNKNOWN = "PracticeQ has no client with this patient's email"


def test_a_patient_practiceq_does_not_know_is_told_plainly(
    new_page: Callable[[], Page], seed: Seed, pq_app: App
) -> None:
    with Session(pq_app.engine) as session, session.begin():
        patient = session.get(Patient, seed.consenting)
        assert patient is not None
        patient.email = "not.in.practiceq@firststephouse.org"
        patient.intakeq_client_id = None
    page = sign_in(new_page(), "case_manager")
    row = page.locator(f'tr[data-patient-row="{seed.consenting}"]')
    before = row.locator(".last-synced").inner_text()
    row.get_by_role("button", name=re.compile("^Sync .* from PracticeQ$")).click()
    status = row.get_by_role("status")
    expect(status).to_contain_text(UNKNOWN)
    expect(status).not_to_contain_text("Synced (")
    assert row.locator(".last-synced").inner_text() == before  # nothing to stamp as synced
    assert blocking_violations(page) == []

    page.goto(f"/patients/{seed.consenting}")
    expect(page.locator("main")).to_contain_text(UNKNOWN)
    page.goto("/")
    expect(page.locator(f'tr[data-patient-row="{seed.consenting}"] .last-synced')).to_have_text(
        before
    )
