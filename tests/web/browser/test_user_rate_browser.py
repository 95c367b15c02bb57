"""One person syncing patient after patient reaches their hourly rate: the row says so in
plain words and when they may sync again, and nothing was changed."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
from browser_support import live_server, sign_in
from playwright.sync_api import Browser, Page, expect
from web_support import Seed

from pqsync.bootstrap import App

SYNC_BUTTON = re.compile(r"^Sync .*from PracticeQ$")


@pytest.fixture
def rate_limited_page(browser: Browser, build_app: Callable[..., App]) -> Iterator[Page]:
    """The dashboard where one person may start two syncs an hour."""
    app = build_app(PQSYNC_USER_SYNCS_PER_HOUR=2, PQSYNC_ORGANIZATION_BUDGET_SHARE=1)
    with live_server(app) as url:
        context = browser.new_context(base_url=url, viewport={"width": 1280, "height": 800})
        context.set_default_timeout(15_000)
        try:
            yield sign_in(context.new_page(), "case_manager")
        finally:
            context.close()


def test_the_row_past_the_users_rate_says_when_they_may_sync_again(
    rate_limited_page: Page, seed: Seed
) -> None:
    page = rate_limited_page
    for patient in (seed.consenting, seed.expired):
        row = page.locator(f'tr[data-patient-row="{patient}"]')
        row.get_by_role("button", name=SYNC_BUTTON).click()
        expect(row.get_by_role("status")).to_contain_text("Synced just now")

    third = page.locator(f'tr[data-patient-row="{seed.missing}"]')
    third.get_by_role("button", name=SYNC_BUTTON).click()

    # The app's clock stands at 14:03 in Denver: the first sync's place frees at 15:03.
    expect(third.get_by_role("status")).to_have_text(
        "You have started as many syncs as one person may in an hour; nothing was changed. "
        "You may sync again at 3:03 PM."
    )
