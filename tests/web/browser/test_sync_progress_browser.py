"""Sync all's progress as a person follows it: a line per patient from the first seconds,
a percentage that rises in steps, the window plan's pages, and a failed run told in words.

The organisation's size comes from PQSYNC_PROGRESS_PATIENTS (default 40); the simulator's
latency keeps the run going long enough to watch, and short enough for CI."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from argon2 import PasswordHasher
from axe_playwright_python.sync_playwright import Axe
from browser_support import live_server, screenshot, sign_in
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import update
from sqlalchemy.orm import Session
from web_support import INTAKEQ_KEY, PASSWORD, TODAY, FakeClock, make_settings

from intakeq_sim import SimConfig, SimulatorServer, demo_directory
from pqsync.bootstrap import App
from pqsync.db.engine import make_engine
from pqsync.db.tables import PartnerUser
from pqsync.services.directory import import_directory, parse_directory

PATIENTS = int(os.environ.get("PQSYNC_PROGRESS_PATIENTS", "40"))
BLOCKING = ("serious", "critical")


@dataclass
class Practice:
    url: str
    simulator: SimulatorServer


def _blocking(page: Page) -> list[str]:
    results = Axe().run(page)
    return [
        f"{v['id']} ({v['impact']})"
        for v in results.response["violations"]
        if v.get("impact") in BLOCKING
    ]


# Appointments per patient: this many make the practice's whole window cost more requests
# than one query per patient (the sync then goes patient by patient); fewer, the window.
PER_PATIENT_PLAN = 200
WINDOW_PLAN = 40


@pytest.fixture
def practice(database_url: str, request: pytest.FixtureRequest) -> Iterator[Practice]:
    """A practice whose First Step House has PATIENTS patients, and as many appointments as
    the test asks (`indirect` parameter: per patient), so the sync chooses the plan."""
    per_patient = getattr(request, "param", PER_PATIENT_PLAN)
    config = SimConfig(minute_limit=None, daily_limit=None)
    with SimulatorServer(
        port=0,
        seed=1,
        today=TODAY,
        api_key=INTAKEQ_KEY,
        patients=PATIENTS,
        appointments=PATIENTS * per_patient,
        config=config,
    ) as simulator:
        engine = make_engine(database_url)
        import_directory(engine, parse_directory(json.dumps(demo_directory(simulator.dataset))))
        cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
        with Session(engine) as session:
            session.execute(update(PartnerUser).values(password_hash=cheap.hash(PASSWORD)))
            session.commit()
        engine.dispose()
        yield Practice(database_url, simulator)


@pytest.fixture
def practice_server(practice: Practice, tmp_path: object) -> Iterator[str]:
    app = App(
        settings=make_settings(
            practice.url, practice.simulator, PQSYNC_QUEUE_URL=f"sqlite:///{tmp_path}/queue.db"
        ),
        engine=make_engine(practice.url),
        clock=FakeClock(),
    )
    try:
        with live_server(app) as url:
            yield url
    finally:
        app.close()


@pytest.fixture
def open_practice_page(
    browser: Browser, practice_server: str, viewport: dict[str, int]
) -> Iterator[Callable[[], Page]]:
    contexts = []

    def open_page() -> Page:
        context = browser.new_context(base_url=practice_server, viewport=viewport)  # type: ignore[arg-type]
        context.set_default_timeout(15_000)
        contexts.append(context)
        return context.new_page()

    yield open_page
    for context in contexts:
        context.close()


def start_sync_all(page: Page) -> None:
    page.get_by_role("button", name="Sync all").click()
    page.get_by_role("dialog").get_by_role("button", name="Start").click()


def line_states(page: Page) -> dict[str, int]:
    states: list[str] = page.locator("#run-patients li").evaluate_all(
        "items => items.map(li => li.getAttribute('data-state'))"
    )
    return {state: states.count(state) for state in set(states)}


def test_each_patient_finishes_in_turn_and_the_percentage_rises_in_steps(
    open_practice_page: Callable[[], Page], practice: Practice
) -> None:
    practice.simulator.configure(latency_ms=40)
    page = sign_in(open_practice_page(), "case_manager")
    start_sync_all(page)
    panel = page.locator("#run-progress")
    # From the first seconds: a line for every patient.
    expect(page.locator("#run-patients li")).to_have_count(PATIENTS)
    seen_percents: set[int] = set()
    mixed = False
    while True:
        percent = int(panel.get_attribute("data-percent") or "0")
        seen_percents.add(percent)
        states = line_states(page)
        if states.get("done", 0) >= 1 and states.get("pending", 0) >= 1 and not mixed:
            mixed = True
            done_line = page.locator('#run-patients li[data-state="done"]').first
            expect(done_line).to_contain_text(re.compile(r"\d+ appointments? synced"))
            queued_line = page.locator('#run-patients li[data-state="pending"]').last
            expect(queued_line).to_contain_text("queued")
            expect(page.locator("#run-headline")).to_contain_text(
                re.compile(rf"Syncing patients\.\.\. \(\d+/{PATIENTS} complete, \d+%\)")
            )
            assert _blocking(page) == []
            screenshot(page, "progress-mid-run", "#run-progress")
        if percent == 100:
            break
        page.wait_for_timeout(150)
    expect(page.locator("#run-headline")).to_contain_text(
        f"Sync all finished: {PATIENTS}/{PATIENTS} complete"
    )
    assert mixed, "no moment showed a finished and a queued patient at once"
    steps = sorted(p for p in seen_percents if 0 < p < 100)
    assert len(steps) >= 2, f"the percentage jumped: {sorted(seen_percents)}"
    expect(page.locator("#run-percent")).to_have_text("100%")


def test_a_failed_run_says_what_happened_to_everyone_and_offers_to_try_again(
    open_practice_page: Callable[[], Page], practice: Practice
) -> None:
    practice.simulator.configure(latency_ms=60)
    page = sign_in(open_practice_page(), "case_manager")
    start_sync_all(page)
    expect(page.locator('#run-patients li[data-state="done"]').first).to_be_visible(timeout=30_000)
    # PracticeQ goes away mid-run.
    practice.simulator.configure(fail_rate=1.0, fault_kinds=["drop"])
    try:
        headline = page.locator("#run-headline")
        expect(headline).to_contain_text("Sync all stopped: PracticeQ", timeout=30_000)
        lines = page.locator("#run-patients li")
        expect(lines.filter(has_text="queued")).to_have_count(0)
        expect(lines.filter(has_text="syncing")).to_have_count(0)
        expect(lines.filter(has_text=re.compile("PracticeQ|stopped before"))).not_to_have_count(0)
        expect(page.locator('#run-patients li[data-state="done"]').first).to_contain_text("synced")
        retry = page.get_by_role("button", name="Try again")
        expect(retry).to_be_visible()
        assert _blocking(page) == []
        screenshot(page, "progress-failed", "#run-progress")
        retry.click()
        expect(page.get_by_role("dialog")).to_be_visible()
    finally:
        practice.simulator.configure(fail_rate=0.0)


@pytest.mark.parametrize("practice", [WINDOW_PLAN], indirect=True)
def test_the_window_plan_reports_its_pages_then_every_patient(
    open_practice_page: Callable[[], Page], practice: Practice
) -> None:
    practice.simulator.configure(latency_ms=150)
    page = sign_in(open_practice_page(), "case_manager")
    start_sync_all(page)
    expect(page.locator("#run-patients li")).to_have_count(PATIENTS)
    headline = page.locator("#run-headline")
    expect(headline).to_contain_text(
        re.compile(r"Fetching from PracticeQ: page \d+ of about \d+ \(\d+%\)")
    )
    seen_percents: set[int] = set()
    panel = page.locator("#run-progress")
    while True:
        percent = int(panel.get_attribute("data-percent") or "0")
        seen_percents.add(percent)
        if percent == 100:
            break
        page.wait_for_timeout(150)
    steps = sorted(p for p in seen_percents if 0 < p < 100)
    assert len(steps) >= 2, f"the percentage jumped: {sorted(seen_percents)}"
    expect(headline).to_contain_text(f"Sync all finished: {PATIENTS}/{PATIENTS} complete")
    expect(page.locator('#run-patients li[data-state="done"]')).to_have_count(PATIENTS)
