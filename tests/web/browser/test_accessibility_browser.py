"""axe-core on every kind of page (it ships inside axe-playwright-python: no network):
no serious or critical violation, at laptop width and at 375 px."""

from __future__ import annotations

import re
from collections.abc import Callable

from axe_playwright_python.sync_playwright import Axe
from browser_support import sign_in
from playwright.sync_api import Page, expect
from web_support import Seed

from pqsync.bootstrap import App

BLOCKING = ("serious", "critical")


def blocking_violations(page: Page) -> list[str]:
    results = Axe().run(page)
    return [
        f"{v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']][:3]}"
        for v in results.response["violations"]
        if v.get("impact") in BLOCKING
    ]


def test_sign_in_page(new_page: Callable[[], Page]) -> None:
    page = new_page()
    page.goto("/login")
    assert blocking_violations(page) == []


def test_roster_progress_and_patient_pages(new_page: Callable[[], Page], seed: Seed) -> None:
    page = sign_in(new_page(), "case_manager")
    assert blocking_violations(page) == []
    page.get_by_role("button", name="Sync all").click()
    assert blocking_violations(page) == []  # the dialog open
    page.get_by_role("dialog").get_by_role("button", name="Start").click()
    expect(page.locator("#run-headline")).to_have_text(
        re.compile("Sync all finished: 12/12 complete"), timeout=60_000
    )
    assert blocking_violations(page) == []  # the progress list
    page.goto(f"/patients/{seed.consenting}")
    expect(page.get_by_role("region", name="Upcoming appointments")).to_be_visible()
    assert blocking_violations(page) == []


def test_staff_pages(new_page: Callable[[], Page], pq_app: App) -> None:
    pq_app.sync_service().sync_organization("first-step-house")
    page = sign_in(new_page(), "staff_admin")
    assert blocking_violations(page) == []
    for path in ("/staff/runs", "/staff/practitioners"):
        page.goto(path)
        assert blocking_violations(page) == [], path
    page.goto("/staff/runs")
    page.locator("tbody tr a").first.click()
    expect(page.get_by_role("heading", name=re.compile("Sync run"))).to_be_visible()
    assert blocking_violations(page) == []
