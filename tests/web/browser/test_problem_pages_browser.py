"""Calm pages for what goes wrong, in the app's frame: an unknown address, a page the role
may not open; the JSON API keeps its JSON errors; the browser finds a favicon."""

from __future__ import annotations

import json
from collections.abc import Callable

from axe_playwright_python.sync_playwright import Axe
from browser_support import fits_width, sign_in
from playwright.sync_api import Page, expect


def blocking_violations(page: Page) -> list[str]:
    results = Axe().run(page)
    return [
        f"{v['id']} ({v['impact']})"
        for v in results.response["violations"]
        if v.get("impact") in ("serious", "critical")
    ]


def test_an_unknown_address_is_a_calm_page_signed_out_and_in(
    new_page: Callable[[], Page],
) -> None:
    page = new_page()
    response = page.goto("/nope")
    assert response is not None and response.status == 404
    assert response.headers["content-type"].startswith("text/html")
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    expect(page.get_by_role("link", name="Back to the patient list")).to_be_visible()
    assert blocking_violations(page) == []

    sign_in(page, "case_manager")
    response = page.goto("/patients/not-a-patient/nope")
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    expect(page.locator("header")).to_contain_text("Jordan Ames")  # the app's own frame
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()
    assert fits_width(page)
    assert blocking_violations(page) == []


def test_a_page_the_role_may_not_open_says_so_in_the_frame(new_page: Callable[[], Page]) -> None:
    page = sign_in(new_page(), "case_manager")
    response = page.goto("/staff/runs")
    assert response is not None and response.status == 403
    expect(page.get_by_role("heading", name="Not available")).to_be_visible()
    expect(page.locator("header")).to_contain_text("Jordan Ames")
    assert blocking_violations(page) == []


def test_the_api_keeps_json_and_the_favicon_is_there(new_page: Callable[[], Page]) -> None:
    page = new_page()
    response = page.goto("/api/partner-dashboard/nope")
    assert response is not None and response.status == 404
    assert json.loads(response.text())["error"]["code"] == "not_found"
    icon = page.goto("/favicon.ico")
    assert icon is not None and icon.status == 200
    assert icon.headers["content-type"] == "image/x-icon"
    assert icon.body()[:4] == b"\x00\x00\x01\x00"  # an ICO file
