"""A patient's history as a person reads it: a first sync is one entry with a disclosure,
each change names its appointment (date, time, provider) and shows only fields a person
knows, and a removal is counted in the row's summary."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date

import httpx
from axe_playwright_python.sync_playwright import Axe
from browser_support import sign_in
from playwright.sync_api import Page, expect
from sqlalchemy import select
from sqlalchemy.orm import Session
from web_support import FakeClock, Seed

from intakeq_sim import SimulatorServer
from pqsync.bootstrap import App
from pqsync.db.tables import Patient

SYNC_BUTTON = re.compile(r"^Sync .*from PracticeQ$")
WHEN_WITH = re.compile(r"\w{3} \d+, \d{4} at \d+:\d\d [AP]M( with .+)?")


def blocking_violations(page: Page) -> list[str]:
    results = Axe().run(page)
    return [
        f"{v['id']} ({v['impact']})"
        for v in results.response["violations"]
        if v.get("impact") in ("serious", "critical")
    ]


def test_history_names_appointments_and_counts_a_removal(
    new_page: Callable[[], Page],
    seed: Seed,
    simulator: SimulatorServer,
    pq_app: App,
    clock: FakeClock,
) -> None:
    page = sign_in(new_page(), "case_manager")
    row = page.locator(f'tr[data-patient-row="{seed.consenting}"]')
    row.get_by_role("button", name=SYNC_BUTTON).click()
    first = row.get_by_role("status")
    expect(first).to_contain_text("Synced just now")
    added = int(re.search(r"\((\d+) new", first.inner_text()).group(1))  # type: ignore[union-attr]
    assert added > 1

    with Session(pq_app.engine) as session:
        client_id = session.scalars(
            select(Patient.intakeq_client_id).filter_by(id=seed.consenting)
        ).one()
    mine = [
        a
        for a in httpx.get(f"{simulator.control_url}/appointments").json()
        if str(a.get("ClientId")) == str(client_id)
        and not a.get("Deleted")
        and date(2025, 11, 16) <= date.fromisoformat(a["StartDateLocal"][:10]) <= date(2026, 2, 13)
        and a["Status"] != "Canceled"
    ]
    cancelled, removed = mine[0]["Id"], mine[1]["Id"]
    httpx.post(
        f"{simulator.control_url}/appointments/{cancelled}/cancel", json={}
    ).raise_for_status()
    httpx.post(f"{simulator.control_url}/appointments/{removed}/delete").raise_for_status()

    clock.advance(seconds=61)  # within the minute, the last sync's answer comes back
    row.get_by_role("button", name=SYNC_BUTTON).click()
    expect(row.get_by_role("status")).to_have_text(
        re.compile(r"Synced just now \(0 new, 1 updated, 1 removed\)")
    )
    row.get_by_role("link").click()
    history = page.get_by_role("region", name="History")
    expect(history).to_contain_text(f"{added} appointments added")
    expect(history).not_to_contain_text("New appointment")
    expect(history).not_to_contain_text("intakeq")
    expect(history).not_to_contain_text("IntakeQ status")
    changed = history.locator("li", has_text="Appointment changed")
    expect(changed.first).to_contain_text(re.compile(r"Appointment changed: " + WHEN_WITH.pattern))
    expect(changed.first).to_contain_text(re.compile(r"status \w+ → cancelled"))
    expect(
        history.locator("li", has_text="Appointment deleted in PracticeQ").first
    ).to_contain_text(WHEN_WITH)
    disclosure = history.locator("details").first
    expect(disclosure.locator("summary")).to_have_text(f"Show the {added} appointments")
    disclosure.locator("summary").click()
    expect(disclosure.locator("li")).to_have_count(added)
    expect(disclosure.locator("li").first).to_have_text(WHEN_WITH)
    assert blocking_violations(page) == []
