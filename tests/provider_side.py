"""What the provider's side does in IntakeQ, through the simulator's store: a booking by
the clinic (the first mapped practitioner, the usual service and location, Confirmed)."""

from __future__ import annotations

from datetime import datetime

from intakeq_sim import SimulatorServer


def book_at(sim: SimulatorServer, client_id: int, start: datetime) -> str:
    """Book `client_id` at `start` (an aware time); the new appointment's Id."""
    ds = sim.dataset
    created = sim.app.store.create(
        client_id=client_id,
        practitioner_id=ds.mapped_practitioners[0].id,
        service_id=ds.services[1].id,
        location_id=ds.locations[0].id,
        status="Confirmed",
        start=start,
    )
    return str(created["Id"])
