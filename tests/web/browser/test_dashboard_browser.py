"""The dashboard in a real browser, at laptop width and at 375 px: signing in, syncing one
patient and everyone, following a run across reloads and tabs, who sees what."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import httpx
import pytest
from browser_support import fits_width, live_server, screenshot, sign_in
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import select
from sqlalchemy.orm import Session
from web_support import FakeClock, Seed, unreachable_intakeq

from intakeq_sim import SimulatorServer
from pqsync.bootstrap import App
from pqsync.db.tables import Patient

OpenPage = Callable[[], Page]
SYNC_BUTTON = re.compile(r"^Sync .*from PracticeQ$")
SYNCED = re.compile(r"Synced just now \(\d+ new, \d+ updated\)")


def test_signing_in_shows_who_and_where_and_signing_out_ends_it(new_page: OpenPage) -> None:
    page = sign_in(new_page(), "case_manager")
    header = page.locator("header")
    expect(header).to_contain_text("Jordan Ames")
    expect(header).to_contain_text("First Step House")
    expect(header).to_contain_text("Case manager")
    page.get_by_role("button", name="Sign out", exact=True).click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.goto("/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def test_a_wrong_password_is_refused_calmly(new_page: OpenPage) -> None:
    page = new_page()
    page.goto("/login")
    page.get_by_label("Email").fill("jordan@firststephouse.org")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong email or password.")


def test_syncing_one_patient_shows_what_changed(new_page: OpenPage, seed: Seed) -> None:
    page = sign_in(new_page(), "case_manager")
    row = page.locator(f'tr[data-patient-row="{seed.consenting}"]')
    expect(row).to_contain_text("Last synced: Never")
    row.get_by_role("button", name=SYNC_BUTTON).click()
    expect(row.get_by_role("status")).to_have_text(SYNCED)
    expect(row).to_contain_text("Last synced: just now")
    expect(row.locator(".next")).to_contain_text(re.compile(r"\w{3} \d+, \d{4} at \d+:\d\d [AP]M"))
    assert fits_width(page)


def test_an_unreachable_practiceq_is_said_in_words(
    browser: Browser, build_app: Callable[..., App], seed: Seed, viewport: dict[str, int]
) -> None:
    with live_server(build_app(intakeq=unreachable_intakeq())) as url:
        context = browser.new_context(base_url=url, viewport=viewport)  # type: ignore[arg-type]
        try:
            page = sign_in(context.new_page(), "case_manager")
            row = page.locator(f'tr[data-patient-row="{seed.consenting}"]')
            row.get_by_role("button", name=SYNC_BUTTON).click()
            expect(row.get_by_role("status")).to_have_text(
                "PracticeQ is not answering; nothing was changed. Try again in a minute."
            )
            expect(row).to_contain_text("Last synced: Never")
        finally:
            context.close()


def test_sync_all_shows_each_patient_and_reaches_the_end(new_page: OpenPage) -> None:
    page = sign_in(new_page(), "case_manager")
    page.get_by_role("button", name="Sync all").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("First Step House")
    expect(dialog).to_contain_text("12")
    expect(dialog.get_by_label("From")).to_have_value("2025-08-17")
    expect(dialog.get_by_label("To")).to_have_value("2026-02-13")
    expect(dialog).to_contain_text("Estimated time")
    dialog.get_by_role("button", name="Start").click()
    headline = page.locator("#run-headline")
    expect(headline).to_have_text(
        re.compile(r"Sync all finished: 12/12 complete \(\d+ new, \d+ updated\)"), timeout=60_000
    )
    expect(page.locator("#run-patients li")).to_have_count(12)
    expect(page.locator("#run-patients li").first).to_contain_text(
        re.compile(r"\d+ appointments synced \(\d+ new")
    )
    screenshot(page, "progress", "#run-progress")
    page.get_by_role("link", name="Show the updated list").click()
    expect(page.locator("tbody")).not_to_contain_text("Last synced: Never")
    expect(page.locator("tbody")).to_contain_text("Last synced: just now")
    screenshot(page, "roster")


def test_cancel_closes_the_dialog_without_starting(new_page: OpenPage) -> None:
    page = sign_in(new_page(), "case_manager")
    page.get_by_role("button", name="Sync all").click()
    page.get_by_role("dialog").get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("dialog")).to_be_hidden()
    expect(page.locator("#run-progress")).to_be_hidden()


@pytest.fixture
def slow_practiceq(simulator: SimulatorServer) -> Iterator[None]:
    """Every IntakeQ answer takes a while, so a run is still going while the test looks."""
    simulator.configure(latency_ms=2500)
    yield
    simulator.configure(latency_ms=0)


def test_a_reload_and_a_second_tab_show_the_same_run(
    new_page: OpenPage, slow_practiceq: None
) -> None:
    first = sign_in(new_page(), "case_manager")
    second = sign_in(new_page(), "partner_admin")  # opened before the run starts
    first.get_by_role("button", name="Sync all").click()
    first.get_by_role("dialog").get_by_role("button", name="Start").click()
    expect(first.locator("#run-headline")).to_contain_text("Syncing patients...")
    run_id = first.locator("#run-progress").get_attribute("data-run")
    assert run_id

    first.reload()
    expect(first.locator("#run-progress")).to_have_attribute("data-run", run_id)
    expect(first.locator("#run-headline")).to_contain_text("Syncing patients...")

    # The second person's "Sync all" joins the run instead of failing.
    second.get_by_role("button", name="Sync all").click()
    second.get_by_role("dialog").get_by_role("button", name="Start").click()
    expect(second.locator("#run-progress")).to_have_attribute("data-run", run_id)
    expect(second.locator("#run-headline")).to_contain_text("Syncing patients...")
    for page in (first, second):
        expect(page.locator("#run-headline")).to_contain_text(
            "Sync all finished: 12/12 complete", timeout=60_000
        )


def test_a_follow_up_booked_in_practiceq_appears_after_a_sync(
    new_page: OpenPage, seed: Seed, simulator: SimulatorServer, pq_app: App, clock: FakeClock
) -> None:
    page = sign_in(new_page(), "case_manager")
    row = page.locator(f'tr[data-patient-row="{seed.consenting}"]')
    row.get_by_role("button", name=SYNC_BUTTON).click()
    expect(row.get_by_role("status")).to_have_text(SYNCED)
    with Session(pq_app.engine) as session:
        client_id = session.scalars(
            select(Patient.intakeq_client_id).filter_by(id=seed.consenting)
        ).one()
    booked = httpx.post(
        f"{simulator.control_url}/appointments",
        json={"ClientId": client_id, "StartDateLocal": "2025-11-15T15:30:00"},
    )
    assert booked.status_code == 200, booked.text

    clock.advance(seconds=61)  # within the minute, the last sync's answer comes back
    row.get_by_role("button", name=SYNC_BUTTON).click()
    expect(row.get_by_role("status")).to_have_text(
        re.compile(r"Synced just now \(1 new, 0 updated\)")
    )
    expect(row.locator(".next")).to_have_text("Nov 15, 2025 at 3:30 PM")
    row.get_by_role("link").click()
    upcoming = page.get_by_role("region", name="Upcoming appointments")
    expect(upcoming.locator("li").first).to_contain_text("Nov 15, 2025 at 3:30 PM")
    expect(page.get_by_role("region", name="History")).to_contain_text("New appointment")
    assert fits_width(page)


def test_another_organisation_gets_not_found_for_the_patient(
    new_page: OpenPage, seed: Seed
) -> None:
    page = sign_in(new_page(), "other_org_admin")
    response = page.goto(f"/patients/{seed.consenting}")
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    expect(page.locator("main")).not_to_contain_text(seed.names[seed.consenting])


def test_a_patient_without_roi_consent_shows_no_appointment_details(
    new_page: OpenPage, seed: Seed, pq_app: App
) -> None:
    pq_app.sync_service().sync_organization("first-step-house")
    page = sign_in(new_page(), "case_manager")
    row = page.locator(f'tr[data-patient-row="{seed.missing}"]')
    expect(row).to_contain_text("ROI consent required")
    expect(row.locator(".next")).to_have_text("ROI consent required: none on file")
    row.get_by_role("link").click()
    expect(page.locator("main")).to_contain_text("ROI consent required")
    expect(page.get_by_role("region", name="Upcoming appointments")).to_have_count(0)
    expect(page.locator(".appointment")).to_have_count(0)


def test_a_viewer_sees_no_sync_buttons(new_page: OpenPage, seed: Seed) -> None:
    page = sign_in(new_page(), "viewer")
    expect(page.locator(f'tr[data-patient-row="{seed.consenting}"]')).to_be_visible()
    expect(page.get_by_role("button", name=SYNC_BUTTON)).to_have_count(0)
    expect(page.get_by_role("button", name="Sync all")).to_have_count(0)
    page.goto(f"/patients/{seed.consenting}")
    expect(page.get_by_role("button", name=SYNC_BUTTON)).to_have_count(0)


def test_staff_choose_an_organisation_and_see_runs_and_budget(
    new_page: OpenPage, pq_app: App
) -> None:
    pq_app.sync_service().sync_organization("first-step-house")
    page = sign_in(new_page(), "staff_admin")
    expect(page.locator("main")).to_contain_text("Choose an organisation")
    page.get_by_label("Organisation").select_option(label="First Step House")
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_role("heading", name=re.compile("First Step House"))).to_be_visible()
    expect(page.locator("tbody tr")).to_have_count(12)

    page.get_by_role("link", name="Sync runs").click()
    expect(page.locator("main")).to_contain_text(re.compile(r"Used in the last 24 hours: \d+ of"))
    page.get_by_label("Type").select_option("manual_org")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("tbody tr")).to_have_count(1)
    page.locator("tbody tr a").click()
    expect(page.get_by_role("heading", name=re.compile("Sync run: organization"))).to_be_visible()
    expect(page.locator("main")).to_contain_text("Unmatched practitioners")
