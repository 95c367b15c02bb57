"""Sync all with the window plan, as the page follows it through the progress API: its
pages first, then each patient's line finished in turn (what the fetch did not return is
re-checked patient by patient), the percentage only rising.

A simulator of the test's own (the same practice as the session's) with latency, so the
run lasts long enough to watch; the run goes on in a worker thread while the test polls."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session
from web_support import INTAKEQ_KEY, TODAY, FakeClock, Seed, make_settings, open_client

from intakeq_sim import SimConfig, SimulatorServer
from pqsync.bootstrap import App
from pqsync.db.engine import make_engine
from pqsync.db.tables import Appointment

ORG = "first-step-house"
GONE = 5  # patients with one appointment deleted in IntakeQ behind our back


@pytest.fixture
def practice() -> Iterator[SimulatorServer]:
    config = SimConfig(minute_limit=None, daily_limit=None)
    with SimulatorServer(port=0, seed=1, today=TODAY, api_key=INTAKEQ_KEY, config=config) as sim:
        yield sim


@pytest.fixture
def app(
    seeded_url: str, practice: SimulatorServer, clock: FakeClock, tmp_path: Path
) -> Iterator[App]:
    built = App(
        settings=make_settings(
            seeded_url, practice, PQSYNC_QUEUE_URL=f"sqlite:///{tmp_path}/queue.db"
        ),
        engine=make_engine(seeded_url),
        clock=clock,
    )
    yield built
    built.close()


@pytest.fixture
def api(app: App) -> Iterator[TestClient]:
    with open_client(app) as client:
        yield client


def sync_all_url(seed: Seed) -> str:
    return f"/api/partner-dashboard/organizations/{seed.orgs['own']}/sync-all-patients"


def delete_one_each(sim: SimulatorServer, patients: int) -> set[str]:
    """One appointment in the window of each of `patients` of ours, deleted in IntakeQ."""
    start, end = sim.dataset.default_window()
    deleted: set[str] = set()
    for client in sim.dataset.fsh_patients:
        theirs = sorted(
            a.id for a in sim.dataset.appointments_in_window(start, end, {client.client_id})
        )
        if theirs and len(deleted) < patients:
            sim.app.store.delete(theirs[0])
            deleted.add(theirs[0])
    assert len(deleted) == patients
    return deleted


def still_shown(app: App, pq_ids: set[str]) -> set[str]:
    with Session(app.engine) as session:
        return set(
            session.scalars(
                select(Appointment.pq_appointment_id).where(
                    Appointment.pq_appointment_id.in_(pq_ids), Appointment.deleted_at.is_(None)
                )
            )
        )


def test_the_window_plan_finishes_each_patients_line_in_turn(
    api: TestClient, app: App, practice: SimulatorServer, seed: Seed, clock: FakeClock
) -> None:
    staff = seed.bearer("partner_admin")
    first = api.post(sync_all_url(seed), headers=staff)
    assert first.status_code == 200
    gone = delete_one_each(practice, GONE)
    assert still_shown(app, gone) == gone
    clock.advance(seconds=61)
    practice.configure(latency_ms=250)

    started = api.post(sync_all_url(seed), headers={**staff, "Prefer": "respond-async"})
    assert started.status_code == 202
    worker = threading.Thread(target=app.jobs.drain, kwargs={"ahead": timedelta(minutes=1)})
    worker.start()
    seen: list[dict[str, Any]] = []
    try:
        while True:
            run = api.get(started.headers["Location"], headers=seed.bearer("viewer")).json()
            seen.append(run)
            if run["status"] != "running":
                break
            threading.Event().wait(0.03)
    finally:
        worker.join()
        practice.configure(latency_ms=0)

    final = seen[-1]
    assert final["status"] == "success", final["incomplete"]
    assert final["plan"] == "window"
    assert still_shown(app, gone) == set()
    total = final["patientsTotal"]
    assert final["patientsDone"] == total
    # The pages were reported, then the patients finished one after another: at some moment
    # one line finished while another was still syncing.
    assert any(run["pagesDone"] >= 1 and run["patientsDone"] == 0 for run in seen)
    states = [Counter(p["state"] for p in run["patients"]) for run in seen]
    assert any(s["done"] >= 1 and s["running"] + s["pending"] >= 1 for s in states)
    in_between = {run["patientsDone"] for run in seen if 0 < run["patientsDone"] < total}
    assert len(in_between) >= 2, sorted(in_between)
    percents = [run["percent"] for run in seen]
    assert percents == sorted(percents), percents  # it never goes back
    assert len({p for p in percents if 0 < p < 100}) >= 3, percents
