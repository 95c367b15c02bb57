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
