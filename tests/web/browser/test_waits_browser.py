"""Waits that explain themselves: a row waiting for PracticeQ's request limit says so and
about how long, goes on in the background and ends synced; a hanging PracticeQ is told in
plain words within 35 s. The row's button keeps the focus throughout."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
from axe_playwright_python.sync_playwright import Axe
from browser_support import live_server, sign_in
from playwright.sync_api import Browser, Page, expect
from web_support import FakeClock, Seed

from intakeq_sim import SimulatorServer
from pqsync.bootstrap import App

SYNC_BUTTON = re.compile(r"^Sync .*from PracticeQ$")
LAPTOP = {"width": 1280, "height": 800}


def blocking_violations(page: Page) -> list[str]:
    results = Axe().run(page)
    return [
        f"{v['id']} ({v['impact']})"
        for v in results.response["violations"]
        if v.get("impact") in ("serious", "critical")
    ]


@pytest.fixture
def limited_page(
    browser: Browser, build_app: Callable[..., App], viewport: dict[str, int]
) -> Iterator[Page]:
    """The dashboard over a budget of two IntakeQ requests per 4-second window (a patient's
    first sync asks for their ClientId, then fetches), whose patient syncs answer after 2 s
    (then 202, going on in the background)."""
    app = build_app(
        INTAKEQ_MINUTE_LIMIT=2,
        INTAKEQ_MINUTE_WINDOW_SECONDS=4,
        PQSYNC_SYNC_ANSWER_SECONDS=2,
    )
    with live_server(app) as url:
        context = browser.new_context(base_url=url, viewport=viewport)  # type: ignore[arg-type]
        context.set_default_timeout(15_000)
        try:
            yield sign_in(context.new_page(), "case_manager")
        finally:
            context.close()


def test_a_row_waiting_for_the_request_limit_says_so_and_ends_synced(
    limited_page: Page, seed: Seed, clock: FakeClock
) -> None:
    page = limited_page
    first = page.locator(f'tr[data-patient-row="{seed.expired}"]')
    second = page.locator(f'tr[data-patient-row="{seed.consenting}"]')
    first.get_by_role("button", name=SYNC_BUTTON).click()
    expect(first.get_by_role("status")).to_contain_text("Synced just now")
    button = second.get_by_role("button", name=SYNC_BUTTON)
    button.click()
    status = second.get_by_role("status")
    expect(status).to_contain_text(
        re.compile(r"Waiting for PracticeQ's request limit: about \d+ seconds?\.")
    )
    expect(status).to_contain_text("goes on by itself")
    expect(button).to_be_focused()
    assert blocking_violations(page) == []
    clock.advance(seconds=10)  # the app's clock: the request limit's window moves on
    expect(status).to_have_text(
        re.compile(r"Synced just now \(\d+ new, \d+ updated\)"), timeout=20_000
    )
    expect(second).to_contain_text("Last synced: just now")
    expect(button).to_be_focused()


def test_buttons_are_named_per_patient(new_page: Callable[[], Page], seed: Seed) -> None:
    page = sign_in(new_page(), "case_manager")
    name = seed.names[seed.consenting]
    row = page.locator(f'tr[data-patient-row="{seed.consenting}"]')
    expect(
        row.get_by_role("button", name=f"Sync {name} from PracticeQ", exact=True)
    ).to_be_visible()
    names = page.locator("button.sync-one").evaluate_all("bs => bs.map(b => b.textContent)")
    assert len(set(names)) == len(names) == 12


def test_a_hanging_practiceq_is_told_in_plain_words_within_35_seconds(
    browser: Browser, pq_app: App, simulator: SimulatorServer, seed: Seed
) -> None:
    simulator.configure(fail_rate=1.0, fault_kinds=["hang"], hang_seconds=40)
    try:
        with live_server(pq_app) as url:
            context = browser.new_context(base_url=url, viewport=LAPTOP)  # type: ignore[arg-type]
            try:
                page = sign_in(context.new_page(), "case_manager")
                row = page.locator(f'tr[data-patient-row="{seed.consenting}"]')
                button = row.get_by_role("button", name=SYNC_BUTTON)
                button.click()
                status = row.get_by_role("status")
                # After PQSYNC_SYNC_ANSWER_SECONDS (8 s) the row says why it waits.
                expect(status).to_contain_text("PracticeQ is slow to answer", timeout=15_000)
                expect(status).to_have_text(
                    "PracticeQ is not answering; nothing was changed. Try again in a minute.",
                    timeout=35_000,
                )
                expect(button).to_be_focused()
                expect(row).to_contain_text("Last synced: Never")
            finally:
                context.close()
    finally:
        simulator.configure(fail_rate=0.0, hang_seconds=30)
