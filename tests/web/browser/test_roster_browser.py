"""The roster's search and pages without resubmission (Post/Redirect/Get): Back, Forward
and Reload show the list again, and no name ever appears in an address."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
from browser_support import live_server, sign_in
from playwright.sync_api import Browser, Page, expect
from web_support import Seed

from pqsync.bootstrap import App


@pytest.fixture
def short_pages(
    browser: Browser, build_app: Callable[..., App], viewport: dict[str, int]
) -> Iterator[Page]:
    """The dashboard listing 5 patients a page."""
    with live_server(build_app(PQSYNC_ROSTER_PAGE_SIZE=5)) as url:
        context = browser.new_context(base_url=url, viewport=viewport)  # type: ignore[arg-type]
        context.set_default_timeout(15_000)
        try:
            yield sign_in(context.new_page(), "case_manager")
        finally:
            context.close()


def names_shown(page: Page) -> list[str]:
    return page.locator("tbody th").all_inner_texts()


def test_search_then_back_and_forward_without_resubmitting(short_pages: Page, seed: Seed) -> None:
    page = short_pages
    name = seed.names[seed.consenting]
    last_name = name.split()[-1]
    page.get_by_label("Search by name").fill(last_name)
    page.get_by_role("button", name="Search").click()
    expect(page.locator("tbody")).to_contain_text(name)
    assert last_name.lower() not in page.url.lower()
    found = names_shown(page)
    assert all(last_name in shown for shown in found)

    page.go_back()
    expect(page.locator("tbody tr")).to_have_count(5)  # the first page of everyone
    page.go_forward()
    expect(page.locator("tbody")).to_contain_text(name)
    assert names_shown(page) == found
    page.reload()
    assert names_shown(page) == found
    assert last_name.lower() not in page.url.lower()


def test_next_page_then_back_and_reload_without_resubmitting(short_pages: Page, seed: Seed) -> None:
    page = short_pages
    first = names_shown(page)
    assert len(first) == 5
    page.get_by_role("button", name="Next page").click()
    expect(page).to_have_url(re.compile(r"page=2"))
    second = names_shown(page)
    assert len(second) == 5 and not set(second) & set(first)
    for shown in first + second:
        assert shown.split()[-1].lower() not in page.url.lower()
    page.reload()
    assert names_shown(page) == second
    page.get_by_role("button", name="Next page").click()
    expect(page).to_have_url(re.compile(r"page=3"))
    third = names_shown(page)
    assert len(third) == 2  # First Step House's 12 patients: 5, 5, then 2
    page.go_back()
    assert names_shown(page) == second
    page.go_back()
    assert names_shown(page) == first


def test_sync_all_presets_an_estimate_that_follows_the_range_and_plain_range_errors(
    new_page: Callable[[], Page], pq_app: App
) -> None:
    # After one run the practice's size is known: the estimate then depends on the range.
    pq_app.sync_service().sync_organization("first-step-house")
    page = sign_in(new_page(), "case_manager")
    page.get_by_role("button", name="Sync all").click()
    dialog = page.get_by_role("dialog")
    start, end = dialog.get_by_label("From"), dialog.get_by_label("To")
    estimate = dialog.locator("#sync-all-estimate")
    expect(estimate).to_contain_text("Estimated time")
    both = estimate.inner_text()

    dialog.get_by_role("button", name="Last 90 days").click()
    expect(start).to_have_value("2025-08-17")
    expect(end).to_have_value("2025-11-15")
    dialog.get_by_role("button", name="Next 90 days").click()
    expect(start).to_have_value("2025-11-15")
    expect(end).to_have_value("2026-02-13")
    expect(dialog.get_by_role("button", name="Next 90 days")).to_have_attribute(
        "aria-pressed", "true"
    )

    start.fill("2015-01-01")
    end.fill("2025-12-31")
    end.dispatch_event("change")
    expect(dialog.get_by_role("alert")).to_have_text(
        re.compile(r"The range is \d+ days long; choose at most 400 days\.")
    )
    end.fill("2014-12-01")
    end.dispatch_event("change")
    expect(dialog.get_by_role("alert")).to_contain_text("The last day is before the first day")
    expect(dialog.get_by_role("button", name="Start")).to_be_disabled()

    start.fill("2025-01-01")
    end.fill("2026-01-31")
    end.dispatch_event("change")
    expect(dialog.get_by_role("alert")).to_have_text("")
    expect(estimate).to_contain_text("Estimated time")
    expect(estimate).not_to_have_text(both)  # 396 days cost other than 180 days
    expect(dialog.get_by_role("button", name="Start")).to_be_enabled()
