"""A real-HTTP IntakeQ simulator: IntakeQ's appointments and clients API plus a control API.

Example::

    with SimulatorServer(config=SimConfig(minute_limit=None)) as sim:
        httpx.get(f"{sim.base_url}/appointments", headers={"X-Auth-Key": DEFAULT_API_KEY})
"""

from intakeq_sim.app import Request, Response, SimulatorApp
from intakeq_sim.clock import Clock, ManualClock, utc_now
from intakeq_sim.config import DEFAULT_API_KEY, FAULT_KINDS, SimConfig
from intakeq_sim.data import (
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
from intakeq_sim.directory import demo_directory
from intakeq_sim.server import SimulatorServer, serve
from intakeq_sim.store import (
    PAGE_SIZE,
    AppointmentChanges,
    AppointmentStore,
    SimError,
)
from intakeq_sim.traffic import MALFORMED_KINDS, malformed_kind
from intakeq_sim.webhooks import EVENT_TYPES, WebhookKnobs, WebhookSender

__all__ = [
    "DEFAULT_API_KEY",
    "DEMO_PASSWORD",
    "EVENT_TYPES",
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
    "WebhookKnobs",
    "WebhookSender",
    "build_dataset",
    "demo_directory",
    "malformed_kind",
    "render_appointment",
    "serve",
    "utc_now",
]
