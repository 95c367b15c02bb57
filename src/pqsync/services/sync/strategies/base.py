"""What every plan shares: the parts it works with, the progress it reports, and the one
method the orchestrator calls."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Generator, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from pqsync.intakeq.client import IntakeQPagingError, RequestTally
from pqsync.intakeq.errors import BudgetExhausted, IntakeQAuthError, IntakeQUnreachable
from pqsync.intakeq.models import Appointment, AppointmentQuery, Client, MalformedRecord
from pqsync.services.sync import records as sync_records
from pqsync.services.sync.context import RunContext
from pqsync.services.sync.deletion import Deletions
from pqsync.services.sync.plan import Planner
from pqsync.services.sync.results import PreparedRun, Summary
from pqsync.services.sync.writer import AppointmentWriter

Record = Appointment | MalformedRecord
# (what: "pages" | "patients", done, total or None) after each step a person can follow.
ProgressCallback = Callable[[str, int, int | None], None]

# Errors that end the whole run: retrying another patient cannot help.
RUN_ENDING = (BudgetExhausted, IntakeQAuthError, IntakeQUnreachable, IntakeQPagingError)


def no_progress(_label: str, _done: int, _total: int | None) -> None:
    return None


class AppointmentSource(Protocol):
    """What the sync needs of the IntakeQ client."""

    def counting(self) -> AbstractContextManager[RequestTally]: ...

    def get_appointment(self, appointment_id: str) -> Appointment | None: ...

    def appointment_pages(self, query: AppointmentQuery) -> Generator[list[Record], None, None]: ...

    def clients(self, search: str | None = None) -> Iterator[Client]: ...


@dataclass(frozen=True)
class Parts:
    """What a plan works with: IntakeQ, the writer, the planner and deletions."""

    source: AppointmentSource
    writer: AppointmentWriter
    planner: Planner
    deletions: Deletions
    practice_zone: ZoneInfo


@dataclass
class Step:
    """One run as a plan sees it: its session, what was prepared, its state, its patients
    (in the order their lines are shown) and where progress goes."""

    session: Session
    prepared: PreparedRun
    ctx: RunContext
    patient_ids: list[uuid.UUID]
    progress: ProgressCallback

    def all_states(self, state: str) -> None:
        for result in self.ctx.results.values():
            result.state = state

    def recount(self) -> None:
        """A fetch of the whole window counts every patient afresh (a resumed run's too)."""
        for result in self.ctx.results.values():
            result.summary = Summary()

    def save_progress(self) -> None:
        sync_records.save_progress(self.session, self.prepared, self.ctx)


class Promised:
    """The pages while the run may send another request within what it promised; `cut`
    tells whether it stopped there (before the last page)."""

    def __init__(self, ctx: RunContext, pages: Iterator[list[Record]]) -> None:
        self.ctx = ctx
        self.pages = pages
        self.cut = False

    def __iter__(self) -> Iterator[list[Record]]:
        while True:
            if not self.ctx.may_request():
                self.cut = True
                return
            page = next(self.pages, None)
            if page is None:
                return
            yield page


class Strategy(Protocol):
    """A plan: given the run, fetch and write what it covers, and report progress."""

    plan: str  # as the run's record names it

    def execute(self, step: Step) -> None: ...
