"""The plans a run can follow, each a `Strategy` the orchestrator picks:

- window: the practice's whole window once, matched locally (an organisation's run when it
  is the cheaper plan; the nightly reconcile);
- per_patient: one `client` query per patient (a patient's run; an organisation's when it
  is the cheaper plan);
- incremental: the nightly run between reconciles (what changed, the days new to the
  window, and a full fetch of the patients left behind);
- refetch: one appointment by id (a webhook's hint).
"""

from pqsync.services.sync.strategies.base import (
    AppointmentSource,
    Parts,
    ProgressCallback,
    Record,
    Step,
    Strategy,
    no_progress,
)
from pqsync.services.sync.strategies.incremental import Incremental, NightlyState, remember_night
from pqsync.services.sync.strategies.per_patient import PerPatient
from pqsync.services.sync.strategies.refetch import Refetch
from pqsync.services.sync.strategies.window import ProbedWindow, WindowFetch

__all__ = [
    "AppointmentSource",
    "Incremental",
    "NightlyState",
    "Parts",
    "PerPatient",
    "ProbedWindow",
    "ProgressCallback",
    "Record",
    "Refetch",
    "Step",
    "Strategy",
    "WindowFetch",
    "no_progress",
    "remember_night",
]
