"""An open page updates itself (issue 26): a provider books in the simulator, its webhook
reaches the server, the worker re-fetches, and the roster and the patient page already open
in the browser show the new appointment without a reload, the history naming
"PracticeQ (webhook)"."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from browser_support import live_server, sign_in
from playwright.sync_api import Browser, BrowserContext, Page, expect
from sqlalchemy import select
from sqlalchemy.orm import Session
from web_support import INTAKEQ_KEY, TODAY, WEBHOOK_TOKEN, Seed, intakeq_for

from intakeq_sim import SimConfig, SimulatorServer
from pqsync.bootstrap import App
from pqsync.db.tables import Patient
from provider_side import book_at

LAPTOP = {"width": 1280, "height": 800}


@pytest.fixture
def own_sim() -> Iterator[SimulatorServer]:
    config = SimConfig(minute_limit=None, daily_limit=None)
    with SimulatorServer(port=0, seed=1, today=TODAY, api_key=INTAKEQ_KEY, config=config) as sim:
        yield sim


@pytest.fixture
def pages(browser: Browser) -> Iterator[Callable[[str], Page]]:
    contexts: list[BrowserContext] = []

    def open_page(base_url: str) -> Page:
        context = browser.new_context(base_url=base_url, viewport=LAPTOP)  # type: ignore[arg-type]
        context.set_default_timeout(20_000)
        contexts.append(context)
        return context.new_page()

    yield open_page
    for context in contexts:
        context.close()


def test_a_booking_in_practiceq_appears_on_open_pages_by_itself(
    build_app: Callable[..., App],
    own_sim: SimulatorServer,
    seed: Seed,
    pages: Callable[[str], Page],
) -> None:
    app = build_app(intakeq_for(own_sim), PQSYNC_WEBHOOK_COALESCE_SECONDS=0)
    app.sync_service().sync_organization("first-step-house")
    with live_server(app) as url:
        roster = sign_in(pages(url), "case_manager")
        row = roster.locator(f'tr[data-patient-row="{seed.consenting}"]')
        expect(row.locator(".next")).not_to_contain_text("Nov 15, 2025 at 3:30 PM")
        patient = sign_in(pages(url), "case_manager")
        patient.goto(f"/patients/{seed.consenting}")
        expect(patient.get_by_role("heading", name="History")).to_be_visible()

        own_sim.configure_webhooks(
            url=f"{url}/api/webhooks/practiceq/appointments?token={WEBHOOK_TOKEN}"
        )
        ours = next(
            c
            for c in own_sim.dataset.clients
            if c.email.lower() == seed_email(app, seed)  # the consenting patient in IntakeQ
        )
        # 3:30 PM in Denver, today
        book_at(own_sim, ours.client_id, datetime(2025, 11, 15, 22, 30, tzinfo=UTC))

        expect(row.locator(".next")).to_contain_text("Nov 15, 2025 at 3:30 PM")
        timeline = patient.locator("ol.timeline")
        expect(timeline).to_contain_text(
            re.compile(r"New appointment: Nov 15, 2025 at 3:30 PM[^·]* · PracticeQ \(webhook\)")
        )
        upcoming = patient.locator("section[aria-labelledby='upcoming-title'] ul.appointments")
        expect(upcoming).to_contain_text("Nov 15, 2025")
        expect(
            patient.get_by_role("status").filter(has_text="Updated from PracticeQ")
        ).to_have_count(1)


def seed_email(app: App, seed: Seed) -> str:
    with Session(app.engine) as session:
        email = session.scalar(select(Patient.email).where(Patient.id == seed.consenting))
    assert email is not None
    return email.lower()
