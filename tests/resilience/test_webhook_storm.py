"""The webhook path end to end under weather (issue 26): the simulator makes N changes to our
patients' appointments (`PQSYNC_TEST_WEBHOOK_CHANGES`, default 100; the issue's figure is
1,000) and sends their webhooks duplicated, delayed and reordered, 5% dropped, plus 20 forged
ones, to a real `pqsync serve` with a real `pqsync worker`, while organisation and patient
syncs run from the CLI. Once the queue has drained and one nightly run has caught the dropped
ones, what we store equals IntakeQ's, nothing is stored twice, and no forged event changed
anything (a forged status or time would show as stale, a forged deletion as missing)."""

from __future__ import annotations

import os
import random
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session
from webhook_stack import PQSYNC, Stack, mismatches, our_client_ids, stack_env, wait_until

from intakeq_sim import AppointmentChanges, SimConfig, SimError, SimulatorServer
from pqsync.db.tables import Appointment, Patient, WebhookEvent

CHANGES = int(os.environ.get("PQSYNC_TEST_WEBHOOK_CHANGES", "100"))
FORGED = 20


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(port=0, config=SimConfig(minute_limit=None, daily_limit=None)) as s:
        yield s


@pytest.fixture
def stack(
    sim: SimulatorServer, engine: Engine, database_url: str, tmp_path: Path
) -> Iterator[Stack]:
    env = stack_env(sim, engine, database_url, tmp_path, coalesce_seconds=1)
    stack = Stack(env, tmp_path)
    yield stack
    stack.stop()


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PQSYNC, *args], env=stack.env, cwd=stack.logs, capture_output=True, text=True
    )


def change_once(sim: SimulatorServer, rng: random.Random, clients: list[int]) -> None:
    """One provider edit of one of our patients' appointments, inside the sync window."""
    store = sim.app.store
    today = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = today + timedelta(days=rng.randint(-60, 60), hours=rng.randint(0, 8))
    live = [a["Id"] for a in store.snapshot(include_deleted=False) if a["ClientId"] in set(clients)]
    kind = rng.choice(["book", "move", "move", "cancel", "confirm", "delete"])
    try:
        if kind == "book" or not live:
            store.create(
                client_id=rng.choice(clients),
                practitioner_id=sim.dataset.mapped_practitioners[0].id,
                service_id=sim.dataset.services[1].id,
                location_id=sim.dataset.locations[0].id,
                status="Confirmed",
                start=start,
            )
        elif kind == "move":
            store.update(rng.choice(live), AppointmentChanges(start=start))
        elif kind == "cancel":
            store.cancel(rng.choice(live), "changed plans")
        elif kind == "confirm":
            store.update(rng.choice(live), AppointmentChanges(status="Confirmed"))
        else:
            store.delete(rng.choice(live))
    except SimError:
        pass  # e.g. an edit of one deleted a moment ago: IntakeQ refuses it too


def forged_events(sim: SimulatorServer, rng: random.Random, clients: list[int]) -> list[Any]:
    """What someone who learned the URL might send: false contents about real appointments
    and clients of ours, made-up ids, another practice."""
    live = [a for a in sim.app.store.snapshot(include_deleted=False) if a["ClientId"] in clients]
    bodies: list[dict[str, Any]] = []
    for n in range(FORGED):
        real = dict(rng.choice(live))
        if n % 4 == 0:
            real.update(Status="Canceled", StartDate=real["StartDate"] + 3_600_000)
            kind = "AppointmentCanceled"
        elif n % 4 == 1:
            kind = "AppointmentDeleted"
        elif n % 4 == 2:
            real.update(Id=f"forged-{n}")
            kind = "AppointmentCreated"
        else:
            real.update(Id=f"forged-{n}", ClientId=800_000 + n)
            kind = "AppointmentRescheduled"
        bodies.append(
            {
                "EventType": kind,
                "ActionPerformedByClient": False,
                "Appointment": real,
                "ClientId": real["ClientId"],
                "PracticeId": "sim-practice",
            }
        )
    return bodies


def pending(engine: Engine) -> int:
    with Session(engine) as session:
        return int(
            session.scalar(
                select(func.count()).where(
                    WebhookEvent.outcome.in_(("queued", "coalesced")),
                    WebhookEvent.processed_at.is_(None),
                )
            )
            or 0
        )


def test_changes_under_duplicated_delayed_reordered_dropped_and_forged_webhooks_end_equal(
    sim: SimulatorServer, engine: Engine, stack: Stack
) -> None:
    first = cli(stack, "sync", "org", "first-step-house")
    assert first.returncode == 0, first.stderr
    clients = sorted(our_client_ids(engine))
    with Session(engine) as session:
        some_patient = str(session.scalars(select(Patient.email).order_by(Patient.email)).first())
    rng = random.Random(26)

    stack.start()
    sim.configure_webhooks(
        url=stack.webhook_url, duplicate_rate=0.2, drop_rate=0.05, max_delay_ms=1500
    )
    syncs: list[subprocess.CompletedProcess[str]] = []

    def run_syncs() -> None:
        syncs.append(cli(stack, "sync", "org", "first-step-house"))
        syncs.append(cli(stack, "sync", "patient", some_patient))

    background = threading.Thread(target=run_syncs)
    background.start()
    forged = forged_events(sim, rng, clients)
    for n in range(CHANGES):
        change_once(sim, rng, clients)
        if n % max(1, CHANGES // FORGED) == 0 and forged:
            sim.webhooks.forge(forged.pop())
        time.sleep(0.01)
    for body in forged:
        sim.webhooks.forge(body)
    background.join()
    assert sim.webhooks.wait_idle(60)
    stats = sim.webhooks.stats()
    assert stats["forged"] == FORGED and stats["dropped"] > 0 and stats["duplicated"] > 0
    assert stats["failed"] == 0
    wait_until(lambda: pending(engine) == 0, 120, "the queue to drain")
    # A sync that met a running one says so and exits non-zero: that is allowed, not a crash.
    assert all(s.returncode in (0, 1) for s in syncs), [s.stderr for s in syncs]

    nightly = cli(stack, "sync", "nightly")
    assert nightly.returncode == 0, nightly.stderr

    assert mismatches(engine, sim) == {"missing": [], "stale": [], "extra": [], "duplicates": []}
    with Session(engine) as session:
        stored_forged = session.scalar(
            select(func.count()).where(Appointment.pq_appointment_id.like("forged-%"))
        )
    assert stored_forged == 0
