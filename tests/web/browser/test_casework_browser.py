"""The casework views in a real browser at laptop width and at 375 px: needs attention on the
roster (marking an item handled), this week and the attendance record (also as Chromium
prints them to PDF, whose text is read back with pypdf), the calendar page and a resident's
own calendar address. axe-core finds no serious or critical violation."""

from __future__ import annotations

import io
import re
import unicodedata
from collections.abc import Callable
from datetime import timedelta
from urllib.parse import urlsplit

from browser_support import fits_width, screenshot, sign_in
from casework_support import add_appointments, denver, names
from playwright.sync_api import Page, expect
from pypdf import PdfReader
from sqlalchemy.orm import Session
from test_accessibility_browser import blocking_violations
from web_support import NOW, Seed

from pqsync.bootstrap import App
from pqsync.db.tables import PatientActivity

OpenPage = Callable[[], Page]


# What the screen's menus and links say: none of it belongs on paper.
SCREEN_ONLY = (
    "Skip to content",
    "Patients",
    "Sign out",
    "Sign out everywhere",
    "Previous week",
    "Next week",
    "Print this page",
    "Download the roster",
    "Calendar feed",
    "Download as CSV",
    "Back to the patient",
    "Show",
)


def pdf_pages(pdf: bytes) -> int:
    return len(PdfReader(io.BytesIO(pdf)).pages)


def pdf_text(pdf: bytes) -> str:
    """The printed words, in reading order, one space between them (ligatures such as the
    "fi" of "Confirmed" read back as their letters)."""
    reader = PdfReader(io.BytesIO(pdf))
    text = " ".join(page.extract_text() or "" for page in reader.pages)
    return " ".join(unicodedata.normalize("NFKC", text).split())


def printed_day(text: str, day: str, next_day: str | None) -> str:
    """The printed words under one day's heading (up to the next day's)."""
    start = text.index(day) + len(day)
    return text[start : text.index(next_day, start)] if next_day else text[start:]


def test_needs_attention_and_marking_an_item_handled(
    new_page: OpenPage, seed: Seed, pq_app: App
) -> None:
    add_appointments(
        pq_app,
        {"patient_id": seed.consenting, "start_time": NOW - timedelta(days=2), "status": "no_show"},
    )
    page = sign_in(new_page(), "case_manager")
    section = page.get_by_role("region", name=re.compile(r"Needs attention \(\d+\)"))
    expect(section).to_be_visible()
    missed = section.get_by_role("heading", name="Missed or cancelled late (last 14 days) (1)")
    expect(missed).to_be_visible()
    assert blocking_violations(page) == []
    assert fits_width(page)
    screenshot(page, "attention", "#attention")
    name = seed.names[seed.consenting]
    section.get_by_role("button", name=re.compile(f"Mark handled: {name}, Missed")).click()
    expect(
        page.get_by_role("heading", name="Missed or cancelled late (last 14 days) (0)")
    ).to_be_visible()
    page.get_by_text(re.compile(r"Handled \(1\)")).click()
    expect(page.get_by_text("Handled by Jordan Ames")).to_be_visible()
    assert blocking_violations(page) == []
    assert fits_width(page)


def test_this_week_on_screen_and_printed(new_page: OpenPage, seed: Seed, pq_app: App) -> None:
    add_appointments(
        pq_app,
        {"patient_id": seed.consenting, "start_time": denver(2025, 11, 11, 9, 0),
         "location_name": "Main clinic"},
        {"patient_id": seed.consenting, "start_time": denver(2025, 11, 13, 15, 30),
         "status": "no_show"},
        {"patient_id": seed.consenting, "start_time": denver(2025, 11, 13, 20, 30)},
        # Residents whose appointments the board must not show:
        {"patient_id": seed.expired, "start_time": denver(2025, 11, 12, 10, 0),
         "location_name": "Back room"},
        {"patient_id": seed.missing, "start_time": denver(2025, 11, 14, 11, 0),
         "location_name": "Back room"},
        {"patient_id": seed.other_patient, "start_time": denver(2025, 11, 14, 12, 0),
         "location_name": "Back room"},
    )  # fmt: skip
    page = sign_in(new_page(), "case_manager")
    page.get_by_role("link", name="This week").click()
    expect(page.get_by_role("heading", name=re.compile("This week"))).to_be_visible()
    tuesday = page.get_by_role("region", name="Tue, Nov 11")
    expect(tuesday.get_by_role("cell", name="Main clinic")).to_be_visible()
    expect(page.get_by_role("region", name="Thu, Nov 13")).to_contain_text("No-show")
    assert blocking_violations(page) == []
    assert fits_width(page)
    screenshot(page, "week")
    page.get_by_role("link", name="Next week →").click()
    expect(page.get_by_text("Mon, Nov 17 to Sun, Nov 23, 2025")).to_be_visible()
    page.get_by_role("link", name="← Previous week").click()
    expect(page.get_by_text("Mon, Nov 10 to Sun, Nov 16, 2025")).to_be_visible()

    page.emulate_media(media="print")
    expect(page.locator("header.top")).to_be_hidden()
    expect(page.get_by_role("link", name="Next week →")).to_be_hidden()
    expect(tuesday.get_by_role("cell", name="Main clinic")).to_be_visible()
    pdf = page.pdf(format="Letter")
    assert pdf.startswith(b"%PDF")
    assert 1 <= pdf_pages(pdf) <= 2  # a board's page or two, not one per day

    # What the board gets: each appointment of the consenting resident under its day, at
    # its time in Denver (the late one is 03:30 UTC on Friday), with its provider.
    text = pdf_text(pdf)
    provider, service = names(pq_app)
    resident = seed.names[seed.consenting]
    assert "Mon, Nov 10 to Sun, Nov 16, 2025" in text
    assert "America/Denver" in text
    tuesday_text = printed_day(text, "Tue, Nov 11", "Wed, Nov 12")
    for word in ("9:00 AM", resident, provider, service, "Main clinic", "Confirmed"):
        assert word in tuesday_text, (word, tuesday_text)
    thursday_text = printed_day(text, "Thu, Nov 13", "Fri, Nov 14")
    for word in ("3:30 PM", "No-show", "8:30 PM", resident, provider):
        assert word in thursday_text, (word, thursday_text)
    assert thursday_text.count(resident) == 2
    assert "No appointments." in printed_day(text, "Fri, Nov 14", "Sat, Nov 15")
    assert text.count(resident) == 3
    # Nothing of the residents without consent, nor of another organisation's.
    for other in (seed.expired, seed.missing, seed.other_patient):
        for part in seed.names[other].split():
            assert part not in text, (part, text)
    assert "Back room" not in text
    for words in SCREEN_ONLY:
        assert words not in text, (words, text)
    assert "Jordan Ames" not in text


def test_the_attendance_record_on_screen_and_printed(
    new_page: OpenPage, seed: Seed, pq_app: App
) -> None:
    add_appointments(
        pq_app,
        {"patient_id": seed.consenting, "start_time": denver(2025, 10, 1, 10, 0)},
        {"patient_id": seed.consenting, "start_time": denver(2025, 10, 8, 10, 0),
         "status": "no_show"},
        {"patient_id": seed.expired, "start_time": denver(2025, 10, 2, 10, 0),
         "location_name": "Back room"},
        {"patient_id": seed.other_patient, "start_time": denver(2025, 10, 3, 10, 0),
         "location_name": "Back room"},
    )  # fmt: skip
    page = sign_in(new_page(), "case_manager")
    page.goto(f"/patients/{seed.consenting}")
    page.get_by_role("link", name="Attendance record (print or CSV)").click()
    expect(page.get_by_role("heading", name="Attendance record")).to_be_visible()
    expect(page.get_by_role("status")).to_contain_text("1 kept, 1 missed, 0 cancelled")
    assert blocking_violations(page) == []
    assert fits_width(page)
    with page.expect_download() as download:
        page.get_by_role("link", name="Download as CSV").click()
    assert download.value.suggested_filename.endswith(".csv")
    page.emulate_media(media="print")
    expect(page.get_by_role("link", name="Download as CSV")).to_be_hidden()
    pdf = page.pdf(format="Letter")
    assert pdf.startswith(b"%PDF") and pdf_pages(pdf) == 1

    # The printed record: the resident, each appointment's day, time in Denver, provider
    # and outcome, the totals; nothing of anyone else, no menus or form.
    text = pdf_text(pdf)
    provider, service = names(pq_app)
    assert "Attendance record" in text and seed.names[seed.consenting] in text
    assert "First Step House" in text
    assert "1 kept, 1 missed, 0 cancelled" in text
    kept = re.search(r"2025-10-01\b(.*?)(?=2025-10-08\b)", text)
    missed = re.search(r"2025-10-08\b(.*)", text)
    assert kept is not None and missed is not None, text
    for word in ("10:00 AM", provider, service, "Kept"):
        assert word in kept.group(1), (word, kept.group(1))
    for word in ("10:00 AM", provider, "Missed"):
        assert word in missed.group(1), (word, missed.group(1))
    assert "Back room" not in text
    for other in (seed.expired, seed.missing, seed.other_patient):
        for part in seed.names[other].split():
            assert part not in text, (part, text)
    for words in SCREEN_ONLY:
        assert words not in text, (words, text)


def test_the_calendar_page(new_page: OpenPage) -> None:
    page = sign_in(new_page(), "case_manager")
    page.get_by_role("link", name="Calendar feed").click()
    expect(page.get_by_text("You have no calendar address yet.")).to_be_visible()
    assert blocking_violations(page) == []
    page.get_by_role("button", name="Make an address").click()
    address = page.get_by_label("Calendar address")
    expect(address).to_have_value(re.compile(r"/calendar/cal_[^/]+\.ics$"))
    assert blocking_violations(page) == []
    assert fits_width(page)
    # The address starts with PQSYNC_BASE_URL; the test server listens elsewhere.
    answer = page.request.get(urlsplit(address.input_value()).path)
    assert answer.status == 200 and answer.text().startswith("BEGIN:VCALENDAR")


def test_filtering_and_sorting_the_roster(new_page: OpenPage, seed: Seed, pq_app: App) -> None:
    add_appointments(
        pq_app,
        {"patient_id": seed.consenting, "start_time": NOW - timedelta(days=2), "status": "no_show"},
    )
    page = sign_in(new_page(), "case_manager")
    page.get_by_label("Show").select_option(label="Missed recently (14 days)")
    page.get_by_label("Sort by").select_option(label="Next appointment")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_role("status").filter(has_text="Showing:")).to_contain_text(
        "Missed recently (14 days), sorted by next appointment"
    )
    expect(page.locator("[data-patient-row]")).to_have_count(1)
    expect(
        page.locator("tbody").get_by_role("link", name=seed.names[seed.consenting])
    ).to_be_visible()
    assert blocking_violations(page) == []
    assert fits_width(page)


def test_the_organisation_page_and_an_invitation(new_page: OpenPage) -> None:
    page = sign_in(new_page(), "partner_admin")
    page.get_by_role("link", name="Your organisation").click()
    expect(page.get_by_role("heading", name="ROI consents")).to_be_visible()
    assert blocking_violations(page) == []
    assert fits_width(page)
    page.get_by_label("Name").fill("Sam Case")
    page.get_by_label("Email").fill("sam@firststephouse.org")
    page.get_by_role("button", name="Invite").click()
    link = page.get_by_label("Invitation link")
    expect(link).to_have_value(re.compile(r"/invite/inv_"))
    assert blocking_violations(page) == []
    invited = new_page()
    invited.goto(urlsplit(link.input_value()).path)
    expect(invited.get_by_role("heading", name="Welcome, Sam Case")).to_be_visible()
    assert blocking_violations(invited) == []
    invited.get_by_label("New password").fill("a long enough passphrase")
    invited.get_by_role("button", name="Set password").click()
    expect(invited.get_by_role("heading", name="Sign in")).to_be_visible()


def test_since_your_last_visit_until_dismissed(new_page: OpenPage, seed: Seed, pq_app: App) -> None:
    page = sign_in(new_page(), "case_manager")
    expect(page.get_by_role("region", name=re.compile("Since your last visit"))).to_have_count(0)
    page.get_by_role("button", name="Sign out", exact=True).click()
    pq_app.clock.advance(hours=1)  # type: ignore[attr-defined]
    with Session(pq_app.engine) as session:  # what a sync writes for a new booking
        appointment_id = add_appointments(
            pq_app, {"patient_id": seed.consenting, "start_time": denver(2025, 11, 20, 9, 0)}
        )[0]
        session.add(
            PatientActivity(
                patient_id=seed.consenting,
                appointment_id=appointment_id,
                activity_type="appointment_created",
                description="New appointment",
                changes={},
                actor="schedule",
                created_at=pq_app.clock(),
            )
        )
        session.commit()
    pq_app.clock.advance(hours=1)  # type: ignore[attr-defined]
    page = sign_in(page, "case_manager")
    panel = page.get_by_role("region", name="Since your last visit (1)")
    expect(panel).to_contain_text(f"New {seed.names[seed.consenting]} Thu, Nov 20 at 9:00 AM")
    assert blocking_violations(page) == []
    assert fits_width(page)
    panel.get_by_role("button", name="Dismiss").click()
    expect(page.get_by_role("region", name=re.compile("Since your last visit"))).to_have_count(0)


def test_a_resident_s_own_calendar_address_on_their_page(
    new_page: OpenPage, seed: Seed, pq_app: App
) -> None:
    add_appointments(pq_app, {"patient_id": seed.consenting, "start_time": denver(2025, 11, 20, 9)})
    page = sign_in(new_page(), "case_manager")
    page.goto(f"/patients/{seed.consenting}")
    expect(page.get_by_text("make your calendar address first")).to_be_visible()
    assert blocking_violations(page) == []
    assert fits_width(page)
    page.get_by_role("link", name="your calendar address").click()
    page.get_by_role("button", name="Make an address").click()
    expect(page.get_by_label("Calendar address")).to_have_value(re.compile(r"\.ics$"))
    page.goto(f"/patients/{seed.consenting}")
    address = page.get_by_label("This resident's calendar address")
    expect(address).to_have_value(
        re.compile(rf"/calendar/calr_[A-Za-z0-9_-]+/residents/{seed.consenting}\.ics$")
    )
    assert blocking_violations(page) == []
    assert fits_width(page)
    answer = page.request.get(urlsplit(address.input_value()).path)
    assert answer.status == 200
    assert answer.text().count("BEGIN:VEVENT") == 1
    # A resident without consent: no address on their page.
    page.goto(f"/patients/{seed.expired}")
    expect(page.get_by_role("heading", name=seed.names[seed.expired])).to_be_visible()
    expect(page.get_by_label("This resident's calendar address")).to_have_count(0)
