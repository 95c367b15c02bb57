"""Benchmark 4, the proposal's headline: all 12 First Step House patients synced end to end
with 250 ms of simulated IntakeQ latency per request and the real limits (10 requests a
minute, 500 a day). The proposal's target: under 30 s.

Ours (`pqsync sync org`, the cheaper plan) against the proposal's approach of one
`client` query per patient, run through the same client, budget and simulator settings.
Runs in real time (the baseline waits out IntakeQ's minute window).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from common import fresh_database, import_demo_directory, make_app, row

from intakeq_sim import SimConfig, SimulatorServer, demo_directory
from pqsync.bootstrap import App
from pqsync.db.engine import make_engine

LIMITS = {"INTAKEQ_MINUTE_LIMIT": 10, "INTAKEQ_DAILY_LIMIT": 500}


@contextmanager
def seeded() -> Iterator[tuple[SimulatorServer, App]]:
    """A simulator with the real limits and latency, and our App on a fresh database."""
    config = SimConfig(latency_ms=250, minute_limit=10, daily_limit=500)
    with SimulatorServer(config=config) as sim, fresh_database("sqlite") as url:
        engine = make_engine(url)
        import_demo_directory(engine, demo_directory(sim.dataset))
        app = make_app(engine, sim.base_url, **LIMITS)
        try:
            yield sim, app
        finally:
            app.close()


def ours() -> tuple[float, int, int]:
    with seeded() as (sim, app):
        started = time.perf_counter()
        result = app.sync_service().sync_organization("first-step-house")
        seconds = time.perf_counter() - started
        assert result.status == "success", result.error
        return seconds, result.requests_made, sim.stats()["rate_limited"]


def per_patient() -> tuple[float, int, int]:
    with seeded() as (sim, app):
        service = app.sync_service()
        started = time.perf_counter()
        requests = 0
        for patient in sim.dataset.fsh_patients:
            result = service.sync_patient(patient.directory_email or patient.email)
            assert result.status == "success", result.error
            requests += result.requests_made
        seconds = time.perf_counter() - started
        return seconds, requests, sim.stats()["rate_limited"]


def main() -> None:
    print(
        "Benchmark 4: First Step House (12 patients) end to end, 250 ms latency, "
        "10 requests/minute, 500/day"
    )
    print(row("run", "seconds", "requests", "429s"))
    seconds, requests, limited = per_patient()
    print(
        row("baseline: one client query per patient", f"{seconds:.1f}", requests, limited),
        flush=True,
    )
    seconds, requests, limited = ours()
    print(row("pqsync sync org first-step-house", f"{seconds:.1f}", requests, limited))
    print(f"target: under 30 s -> {'ok' if seconds < 30 else 'over'}")


if __name__ == "__main__":
    main()
