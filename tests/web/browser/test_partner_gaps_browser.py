"""Issue 24's partner-facing gaps, as a person sees them: the sign-in form fits a phone,
partners see who an appointment is with as staff do, the roster's provider column is the
next appointment's and says so, and a patient PracticeQ does not know is told plainly."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from browser_support import fits_width, sign_in
from playwright.sync_api import Page, expect
from sqlalchemy import select
from sqlalchemy.orm import Session
from test_accessibility_browser import blocking_violations
from web_support import FakeClock, Seed

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


@pytest.fixture
def book(simulator: SimulatorServer, pq_app: App) -> Iterator[Callable[..., Any]]:
    """A provider books in IntakeQ (the simulator), answering IntakeQ's record; the
    bookings are deleted afterwards (the simulator serves the whole session)."""
    made: list[str] = []

    def booking(patient: uuid.UUID, **fields: Any) -> Any:
        with Session(pq_app.engine) as session:
            client_id = session.scalars(
                select(Patient.intakeq_client_id).filter_by(id=patient)
            ).one()
        booked = httpx.post(
            f"{simulator.control_url}/appointments", json={"ClientId": client_id, **fields}
        )
        assert booked.status_code == 200, booked.text
        made.append(booked.json()["Id"])
        return booked.json()

    yield booking
    for appointment_id in made:
        httpx.post(f"{simulator.control_url}/appointments/{appointment_id}/delete")


def test_partners_see_the_practitioner_staff_see_when_no_provider_is_mapped(
    new_page: Callable[[], Page], seed: Seed, book: Callable[..., Any], pq_app: App
) -> None:
    record = book(
        seed.consenting,
        StartDateLocal="2026-01-29T07:15:00",
        PractitionerId=UNMAPPED_PRACTITIONER,
    )
    name = record["PractitionerName"]
    assert name
    pq_app.sync_service().sync_patient(str(seed.consenting))

    shown: dict[str, str] = {}
    for who in ("staff_admin", "case_manager"):
        page = sign_in(new_page(), who)
        page.goto(f"/patients/{seed.consenting}")
        upcoming = page.get_by_role("region", name="Upcoming appointments")
        line = upcoming.locator(".appointment", has_text="Jan 29, 2026 at 7:15 AM")
        expect(line).to_have_count(1)
        shown[who] = line.locator(".who").inner_text().strip()
    assert shown == {"staff_admin": name, "case_manager": name}


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
    expect(page.locator("main")).to_contain_text(f"Not synced: {UNKNOWN}")
    assert blocking_violations(page) == []
    page.goto("/")
    expect(page.locator(f'tr[data-patient-row="{seed.consenting}"] .last-synced')).to_have_text(
        before
    )


def test_the_provider_column_is_the_next_appointments_and_says_so(
    new_page: Callable[[], Page],
    seed: Seed,
    book: Callable[..., Any],
    pq_app: App,
    clock: FakeClock,
) -> None:
    sync = pq_app.sync_service()
    sync.sync_patient(str(seed.consenting))
    page = sign_in(new_page(), "case_manager")
    header = page.locator("thead th").nth(1)
    expect(header).to_have_text("Provider of the next appointment")
    row = page.locator(f'tr[data-patient-row="{seed.consenting}"]')
    provider, next_visit = row.locator(".provider"), row.locator(".next")
    before = (provider.inner_text(), next_visit.inner_text())
    locum = book(
        seed.consenting, StartDateLocal="2026-02-10T09:00:00", PractitionerId=UNMAPPED_PRACTITIONER
    )["PractitionerName"]
    assert locum not in before[0]

    # A later visit with another practitioner changes nothing in the row, live or reloaded.
    clock.advance(seconds=61)  # within the minute, the last sync's answer comes back
    row.get_by_role("button", name=re.compile("^Sync .* from PracticeQ$")).click()
    expect(row.get_by_role("status")).to_contain_text("Synced just now")
    assert (provider.inner_text(), next_visit.inner_text()) == before
    page.reload()
    assert (provider.inner_text(), next_visit.inner_text()) == before

    # A sooner one is the next appointment: the provider changes with it, as the header says.
    # (The simulator serves the whole session: other tests' bookings may sit on the next
    # days, so the sooner visit is this afternoon, just after the tests' "now", 14:03.)
    book(
        seed.consenting, StartDateLocal="2025-11-15T14:40:00", PractitionerId=UNMAPPED_PRACTITIONER
    )
    clock.advance(seconds=61)
    sync.sync_patient(str(seed.consenting))
    page.reload()
    expect(next_visit).to_have_text("Nov 15, 2025 at 2:40 PM")
    expect(provider).to_have_text(locum)
    if page.viewport_size and page.viewport_size["width"] < 600:  # each cell says what it is
        label = provider.evaluate("e => getComputedStyle(e, '::before').content")
        assert "Provider of the next appointment" in label, label
    assert blocking_violations(page) == []


def test_the_sync_all_dialog_estimate_grows_with_the_range(
    new_page: Callable[[], Page], seed: Seed
) -> None:
    page = sign_in(new_page(), "case_manager")
    page.get_by_role("button", name="Sync all").click()
    dialog = page.get_by_role("dialog")
    estimate = dialog.locator("#sync-all-estimate")
    expect(estimate).to_contain_text("at most")

    def at_most() -> int:
        match = re.search(r"at most (\d+) PracticeQ request", estimate.inner_text())
        assert match, estimate.inner_text()
        return int(match.group(1))

    default = at_most()  # 181 days
    dialog.get_by_role("button", name="Last 90 days").click()
    expect(estimate).not_to_contain_text("Working out")
    shorter = at_most()
    start = dialog.get_by_label("From").input_value()
    dialog.get_by_label("From").fill("2024-11-01")  # 400 days to the default's last day
    dialog.get_by_label("To").fill("2025-12-05")
    expect(estimate).not_to_contain_text("Working out")
    expect(estimate).not_to_contain_text(f"at most {default} PracticeQ")
    longest = at_most()
    assert shorter <= default < longest, (shorter, default, longest, start)
    assert blocking_violations(page) == []
