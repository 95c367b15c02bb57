"""Issue 24's staff pages in Chromium, at 1280 and 375 px: unknown IntakeQ clients counted as
clients, practitioner mapping by choosing from lists, creating a provider, errors that keep
what was typed, and the chosen organisation remembered across the staff pages."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable

from browser_support import fits_width, sign_in
from playwright.sync_api import Page, expect
from test_accessibility_browser import blocking_violations

from intakeq_sim import SimulatorServer
from pqsync.bootstrap import App
from pqsync.services.directory import import_directory, parse_directory

OpenPage = Callable[[], Page]
LOCUM = {"providers": [{"email": "locum@clinic.example", "name": "Dr. Lou Locum"}]}


def unknown_truth(simulator: SimulatorServer) -> Counter[str]:
    """The simulator's in-window appointments of clients who are no First Step House patient."""
    start, end = simulator.dataset.default_window()
    clients = simulator.dataset.clients_by_id
    return Counter(
        str(a.client_id)
        for a in simulator.dataset.appointments_in_window(start, end)
        if clients[a.client_id].organization is None
    )


def practitioners_page(page: Page) -> Page:
    page.get_by_role("link", name="Practitioners").click()
    expect(page.get_by_role("heading", name="Map a practitioner")).to_be_visible()
    return page


def test_unknown_clients_are_counted_as_clients_with_their_appointments(
    new_page: OpenPage, pq_app: App, simulator: SimulatorServer
) -> None:
    pq_app.sync_service().sync_organization("first-step-house")
    truth = unknown_truth(simulator)
    clients, appointments = len(truth), sum(truth.values())
    assert 1 < clients < appointments
    page = sign_in(new_page(), "staff_admin")
    page.get_by_role("link", name="Sync runs").click()
    page.locator("tbody tr a").first.click()
    section = page.get_by_role("region", name="Unknown patients")
    expect(section.locator("#unknown-summary")).to_have_text(
        f"{clients} IntakeQ clients not in the directory; "
        f"their {appointments} appointments were skipped."
    )
    table = section.get_by_role("table", name="IntakeQ clients not in the directory")
    rows = table.locator("tbody tr")
    expect(rows).to_have_count(clients)
    shown = {
        rows.nth(i).locator("th").inner_text(): int(
            rows.nth(i).locator("td").inner_text().split()[0]
        )
        for i in range(clients)
    }
    assert shown == dict(truth)
    busiest = max(truth, key=lambda c: truth[c])
    row = rows.filter(has=page.locator("th", has_text=re.compile(f"^{busiest}$")))
    row.get_by_text("Appointment ids").click()
    expect(row.get_by_role("listitem")).to_have_count(truth[busiest])
    assert fits_width(page)
    assert blocking_violations(page) == []


def test_mapping_a_practitioner_by_choosing_from_lists(
    new_page: OpenPage, pq_app: App, simulator: SimulatorServer
) -> None:
    result = pq_app.sync_service().sync_organization("first-step-house")
    import_directory(pq_app.engine, parse_directory(json.dumps(LOCUM)))
    unmapped = simulator.dataset.special.unmapped_practitioner
    page = sign_in(new_page(), "staff_admin")
    # From the run's page: "Map it" opens the mapping with the practitioner chosen.
    page.get_by_role("link", name="Sync runs").click()
    page.locator("tbody tr a").first.click()
    page.get_by_role("link", name=f"Map it ({unmapped.id})").click()
    expect(page.get_by_role("table", name="Unmapped practitioners")).to_contain_text(unmapped.id)
    assert blocking_violations(page) == []
    form = page.get_by_role("form", name="Map a practitioner")
    practitioner = form.get_by_label("IntakeQ practitioner")
    expect(practitioner).to_have_value(unmapped.id)
    expect(practitioner.locator("option:checked")).to_have_text(
        f"{unmapped.complete_name} (IntakeQ id {unmapped.id}), not mapped: "
        f"{result.unmatched_practitioners[unmapped.id]} appointments without a provider"
    )
    form.get_by_label("Provider").select_option(label="Dr. Lou Locum (locum@clinic.example)")
    form.get_by_role("button", name="Map").click()
    expect(page.get_by_role("status")).to_have_text(
        f"Mapped. {result.unmatched_practitioners[unmapped.id]} appointment(s) now show "
        "their provider."
    )
    expect(page.locator("main")).to_contain_text("Every practitioner is mapped.")
    expect(practitioner.locator("option", has_text=unmapped.id)).to_contain_text(
        "mapped to Dr. Lou Locum"
    )
    assert fits_width(page)
    assert blocking_violations(page) == []


def test_a_mapping_error_keeps_what_was_chosen_and_says_which_field(
    new_page: OpenPage, pq_app: App, simulator: SimulatorServer
) -> None:
    pq_app.sync_service().sync_organization("first-step-house")
    unmapped = simulator.dataset.special.unmapped_practitioner
    taken = simulator.dataset.mapped_practitioners[0]
    page = practitioners_page(sign_in(new_page(), "staff_admin"))
    form = page.get_by_role("form", name="Map a practitioner")
    form.get_by_label("IntakeQ practitioner").select_option(unmapped.id)
    form.get_by_role("button", name="Map").click()
    form = page.get_by_role("form", name="Map a practitioner")
    provider = form.get_by_label("Provider")
    expect(provider).to_have_attribute("aria-invalid", "true")
    expect(provider).to_have_accessible_description("Choose a provider.")
    expect(form.get_by_label("IntakeQ practitioner")).to_have_value(unmapped.id)
    assert blocking_violations(page) == []

    # A provider who already has a practitioner: the error sits by the provider, both kept.
    provider = form.get_by_label("Provider")
    provider.select_option(provider.locator("option", has_text=taken.email).get_attribute("value"))
    form.get_by_role("button", name="Map").click()
    form = page.get_by_role("form", name="Map a practitioner")
    expect(form.get_by_label("Provider")).to_have_accessible_description(
        "That provider is already mapped to another IntakeQ practitioner."
    )
    expect(form.get_by_label("IntakeQ practitioner")).to_have_value(unmapped.id)
    expect(form.get_by_label("Provider").locator("option:checked")).to_contain_text(taken.email)
    assert fits_width(page)


def test_creating_a_provider_keeps_what_was_typed_after_an_error_then_maps(
    new_page: OpenPage, pq_app: App, simulator: SimulatorServer
) -> None:
    result = pq_app.sync_service().sync_organization("first-step-house")
    unmapped = simulator.dataset.special.unmapped_practitioner
    page = practitioners_page(sign_in(new_page(), "staff_admin"))
    form = page.get_by_role("form", name="Create a provider")
    form.get_by_label("Name").fill("Dr. Lou Locum")
    form.get_by_label("Email").fill("locum at clinic")
    form.get_by_label("Map to IntakeQ practitioner (optional)").select_option(unmapped.id)
    form.get_by_role("button", name="Create provider").click()

    form = page.get_by_role("form", name="Create a provider")
    email = form.get_by_label("Email")
    expect(email).to_have_accessible_description("That is not an email address.")
    expect(email).to_have_value("locum at clinic")
    expect(form.get_by_label("Name")).to_have_value("Dr. Lou Locum")
    expect(form.get_by_label("Map to IntakeQ practitioner (optional)")).to_have_value(unmapped.id)
    expect(page.get_by_role("alert")).to_have_text(
        "Provider not created: that is not an email address."
    )
    assert fits_width(page)
    assert blocking_violations(page) == []

    email.fill("locum@clinic.example")
    form.get_by_role("button", name="Create provider").click()
    relinked = result.unmatched_practitioners[unmapped.id]
    expect(page.get_by_role("status")).to_have_text(
        f"Provider Dr. Lou Locum created. Mapped. {relinked} appointment(s) now show "
        "their provider."
    )
    expect(page.locator("main")).to_contain_text("Every practitioner is mapped.")
    providers = page.get_by_role("form", name="Map a practitioner").get_by_label("Provider")
    expect(providers.locator("option", has_text="locum@clinic.example")).to_have_text(
        f"Dr. Lou Locum (locum@clinic.example), mapped to IntakeQ id {unmapped.id}"
    )
    expect(page.get_by_role("form", name="Create a provider").get_by_label("Name")).to_have_value(
        ""
    )


def test_the_chosen_organisation_survives_the_patients_link(new_page: OpenPage) -> None:
    page = sign_in(new_page(), "staff_admin")
    expect(page.locator("main")).to_contain_text("Choose an organisation")
    page.get_by_label("Organisation").select_option(label="Harbor House")
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Harbor House")

    page.get_by_role("link", name="Sync runs").click()
    expect(page.get_by_label("Organisation").locator("option:checked")).to_have_text("Harbor House")
    page.get_by_role("link", name="Practitioners").click()
    page.get_by_role("link", name="Patients").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Harbor House")
    expect(page.locator("tbody tr")).to_have_count(1)
    assert "Harbor" not in page.url and "olive" not in page.url.lower()
    assert blocking_violations(page) == []

    # Choosing on the runs page counts too; the Patients link then opens that one.
    page.get_by_role("link", name="Sync runs").click()
    page.get_by_label("Organisation").select_option(label="First Step House")
    page.get_by_role("button", name="Filter").click()
    page.get_by_role("link", name="Patients").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("First Step House")
    expect(page.locator("tbody tr")).to_have_count(12)

    # Signing out forgets it.
    page.get_by_role("button", name="Sign out", exact=True).click()
    sign_in(page, "staff_admin")
    expect(page.locator("main")).to_contain_text("Choose an organisation")
