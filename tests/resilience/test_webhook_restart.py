"""Webhooks accepted by `pqsync serve` are processed even when the web process and the worker
are SIGKILLed before they got to it: the events were stored before the answer, and the
worker that comes back processes them."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session
from webhook_stack import PQSYNC, Stack, mismatches, our_client_ids, stack_env, wait_until

from intakeq_sim import SimConfig, SimulatorServer
from pqsync.db.tables import Appointment, WebhookEvent


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(port=0, config=SimConfig(minute_limit=None, daily_limit=None)) as s:
        yield s


@pytest.fixture
def stack(
    sim: SimulatorServer, engine: Engine, database_url: str, tmp_path: Path
) -> Iterator[Stack]:
    env = stack_env(sim, engine, database_url, tmp_path, coalesce_seconds=3)
    stack = Stack(env, tmp_path)
    yield stack
    stack.kill()
    stack.stop()


def pending_events(engine: Engine) -> int:
    with Session(engine) as session:
        return int(
            session.scalar(
                select(func.count()).where(
                    WebhookEvent.outcome == "queued", WebhookEvent.processed_at.is_(None)
                )
            )
            or 0
        )


def test_events_accepted_before_both_processes_die_are_processed_after_they_return(
    sim: SimulatorServer, engine: Engine, stack: Stack
) -> None:
    subprocess.run(
        [*PQSYNC, "sync", "org", "first-step-house"],
        env=stack.env,
        cwd=stack.logs,
        check=True,
        capture_output=True,
    )
    clients = our_client_ids(engine)
    with Session(engine) as session:
        stored = list(session.scalars(select(Appointment.pq_appointment_id)))
    truth = {a["Id"]: a for a in sim.app.store.snapshot(include_deleted=False)}
    # One live appointment of each of five patients, cancelled by the provider.
    chosen: dict[int, str] = {}
    for ident in stored:
        record = truth.get(ident)
        if record and record["Status"] != "Canceled" and record["ClientId"] in clients:
            chosen.setdefault(record["ClientId"], ident)
    targets = list(chosen.values())[:5]
    assert len(targets) == 5

    stack.start()
    sim.configure_webhooks(url=stack.webhook_url)
    for ident in targets:
        sim.app.store.cancel(ident, "provider ill")
    assert sim.webhooks.wait_idle()
    assert sim.webhooks.stats()["delivered"] == 5
    stack.kill()
    # Accepted (202) and stored, not yet processed: the re-fetches wait 3 s for more events.
    assert pending_events(engine) == 5

    stack.start()
    wait_until(lambda: pending_events(engine) == 0, 90, "the events to be processed")
    with Session(engine) as session:
        statuses = dict(
            session.execute(
                select(Appointment.pq_appointment_id, Appointment.intakeq_status).where(
                    Appointment.pq_appointment_id.in_(targets)
                )
            ).all()
        )
    assert statuses == {ident: "Canceled" for ident in targets}
    assert mismatches(engine, sim) == {"missing": [], "stale": [], "extra": [], "duplicates": []}
