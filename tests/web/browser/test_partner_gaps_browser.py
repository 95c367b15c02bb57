"""Issue 24's partner-facing gaps, as a person sees them: the sign-in form fits a phone."""

from __future__ import annotations

from collections.abc import Callable

from browser_support import fits_width
from playwright.sync_api import Page
from test_accessibility_browser import blocking_violations


def test_the_sign_in_fields_fit_inside_the_screen(new_page: Callable[[], Page]) -> None:
    page = new_page()
    page.goto("/login")
    width = page.viewport_size["width"] if page.viewport_size else 0
    for label in ("Email", "Password"):
        box = page.get_by_label(label).bounding_box()
        assert box is not None, label
        assert box["x"] >= 0 and box["x"] + box["width"] <= width, (label, box, width)
    # A case manager's address is shown whole, not cut off inside the field.
    email = page.get_by_label("Email")
    email.fill("beth.rodriguez@firststephouse.org")
    inner = email.evaluate("e => [e.scrollWidth, e.clientWidth]")
    assert inner[0] <= inner[1], inner
    button = page.get_by_role("button", name="Sign in").bounding_box()
    assert button is not None and button["x"] + button["width"] <= width
    assert fits_width(page)
    assert blocking_violations(page) == []
