"""Words a person reads on the roster and the patient page: consent states told apart with
the expiry date, the time zone of every time shown, and "Sync again" after a sync."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
from browser_support import sign_in
from playwright.sync_api import Locator, Page, expect
from sqlalchemy import select
from sqlalchemy.orm import Session
from web_support import Seed

from intakeq_sim import SimulatorServer
from pqsync.bootstrap import App
from pqsync.db.tables import Patient

VISIBLE = "b => Array.from(b.childNodes).filter(n => n.nodeType === 3).map(n => n.textContent)"


def visible_words(button: Locator) -> str:
    """The words shown on the button (the hidden name in between is for screen readers)."""
    return " ".join(w.strip() for w in button.evaluate(VISIBLE + ".join(' ')").split())


ZONE = "Times are in America/Denver time (MST)."


def test_consent_states_are_told_apart_with_the_expiry_date(
    new_page: Callable[[], Page], seed: Seed
) -> None:
    page = sign_in(new_page(), "case_manager")
    expired = page.locator(f'tr[data-patient-row="{seed.expired}"] .next')
    missing = page.locator(f'tr[data-patient-row="{seed.missing}"] .next')
    expect(expired).to_have_text("ROI consent required: expired on Oct 16, 2025")
    expect(missing).to_have_text("ROI consent required: none on file")
    expect(page.locator(".zone-note")).to_have_text(ZONE)
    expect(page.get_by_role("heading", level=1)).to_have_text("Patients (12) First Step House")
    page.goto(f"/patients/{seed.expired}")
    expect(page.locator("main")).to_contain_text("ROI consent required: expired on Oct 16, 2025")
    expect(page.locator(".zone-note")).to_have_text(ZONE)


def test_a_synced_row_offers_to_sync_again(new_page: Callable[[], Page], seed: Seed) -> None:
    page = sign_in(new_page(), "case_manager")
    name = seed.names[seed.consenting]
    row = page.locator(f'tr[data-patient-row="{seed.consenting}"]')
    button = row.get_by_role("button", name=f"Sync {name} from PracticeQ", exact=True)
    assert visible_words(button) == "Sync from PracticeQ"
    button.click()
    expect(row.get_by_role("status")).to_have_text(re.compile(r"Synced just now"))
    again = row.get_by_role("button", name=f"Sync {name} again from PracticeQ", exact=True)
    assert visible_words(again) == "Sync again"
    expect(again).to_be_focused()
    expect(page.locator("thead")).to_contain_text("Provider of the next appointment")


def test_a_recent_no_show_is_at_the_top_of_the_patient_page(
    new_page: Callable[[], Page], seed: Seed, simulator: SimulatorServer, pq_app: App
) -> None:
    with Session(pq_app.engine) as session:
        client_id = session.scalars(
            select(Patient.intakeq_client_id).filter_by(id=seed.consenting)
        ).one()
    for start, status in (("2025-11-12T09:00:00", "Missed"), ("2025-10-20T09:00:00", "Missed")):
        booked = httpx.post(
            f"{simulator.control_url}/appointments",
            json={"ClientId": client_id, "StartDateLocal": start, "Status": status},
        )
        assert booked.status_code == 200, booked.text
    pq_app.sync_service().sync_patient(str(seed.consenting))
    page = sign_in(new_page(), "case_manager")
    page.goto(f"/patients/{seed.consenting}")
    missed = page.get_by_role("region", name="Missed in the last 14 days")
    expect(missed).to_contain_text("Nov 12, 2025 at 9:00 AM")
    expect(missed).to_contain_text("No-show")
    expect(missed).not_to_contain_text("Oct 20, 2025")  # older than 14 days
    headings = page.locator("main h2").all_inner_texts()
    assert headings[0] == "Missed in the last 14 days", headings


def _luminance(rgb: tuple[int, int, int]) -> float:
    def channel(value: int) -> float:
        c = value / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(v) for v in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def test_the_focus_ring_stands_out_at_least_3_to_1(new_page: Callable[[], Page]) -> None:
    page = sign_in(new_page(), "case_manager")
    page.keyboard.press("Tab")  # the skip link, then the first link of the header
    page.keyboard.press("Tab")
    style = page.evaluate(
        "() => { const s = getComputedStyle(document.activeElement);"
        " return [s.outlineStyle, s.outlineWidth, s.outlineColor]; }"
    )
    assert style[0] == "solid" and float(style[1].rstrip("px")) >= 2, style
    ring = tuple(int(v) for v in re.findall(r"\d+", style[2])[:3])
    lighter, darker = sorted((_luminance(ring), _luminance((255, 255, 255))), reverse=True)  # type: ignore[arg-type]
    assert (lighter + 0.05) / (darker + 0.05) >= 3, style
