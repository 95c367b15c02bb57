"""A real-HTTP IntakeQ simulator: the API of shared INTAKEQ_API.md plus a control API.

Example::

    with SimulatorServer(config=SimConfig(minute_limit=None)) as sim:
        httpx.get(f"{sim.base_url}/appointments", headers={"X-Auth-Key": SIMULATOR_API_KEY})
"""

from pqsync.intakeq.simulator.app import Request, Response, SimulatorApp
from pqsync.intakeq.simulator.clock import Clock, ManualClock, utc_now
from pqsync.intakeq.simulator.config import FAULT_KINDS, SimConfig
from pqsync.intakeq.simulator.data import (
    DEMO_PASSWORD,
    STATUSES,
    Client,
    Dataset,
    Location,
    Practitioner,
    Service,
    SimAppointment,
    SpecialCases,
    build_dataset,
    render_appointment,
)
from pqsync.intakeq.simulator.directory import demo_directory
from pqsync.intakeq.simulator.server import SimulatorServer, serve
from pqsync.intakeq.simulator.store import (
    PAGE_SIZE,
    AppointmentChanges,
    AppointmentStore,
    SimError,
)
from pqsync.intakeq.simulator.traffic import MALFORMED_KINDS, malformed_kind

__all__ = [
    "DEMO_PASSWORD",
    "FAULT_KINDS",
    "MALFORMED_KINDS",
    "PAGE_SIZE",
    "STATUSES",
    "AppointmentChanges",
    "AppointmentStore",
    "Client",
    "Clock",
    "Dataset",
    "Location",
    "ManualClock",
    "Practitioner",
    "Request",
    "Response",
    "Service",
    "SimAppointment",
    "SimConfig",
    "SimError",
    "SimulatorApp",
    "SimulatorServer",
    "SpecialCases",
    "build_dataset",
    "demo_directory",
    "malformed_kind",
    "render_appointment",
    "serve",
    "utc_now",
]
