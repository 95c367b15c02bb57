"""One run per scope across processes (a lease), and one failing patient failing alone."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from contextlib import AbstractContextManager
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from intakeq_sim import ManualClock, SimulatorServer
from pqsync.bootstrap import App
from pqsync.db.tables import Appointment, SyncLog, SyncState
from pqsync.intakeq.client import RequestTally
from pqsync.intakeq.errors import IntakeQServerError
from pqsync.intakeq.models import Appointment as IntakeQAppointment
from pqsync.intakeq.models import AppointmentQuery, Client
from pqsync.services.sync import SyncService
from pqsync.services.sync.locks import PREPARED_HOLD, SyncInProgress
from pqsync.services.sync.orchestrator import AppointmentSource, Record
from pqsync.services.sync.plan import PRACTICE_DENSITY


def test_a_second_run_of_the_same_scope_is_told_which_run_is_going(
    service: SyncService, pq: App
) -> None:
    first = service.prepare_organization("first-step-house")
    with pytest.raises(SyncInProgress) as caught:
        service.prepare_organization("first-step-house")
    assert caught.value.run_id == first.run_id
    assert "first-step-house is already running" in str(caught.value)
    # Another scope is not blocked, and the first run still completes.
    assert service.sync_patient("ann@firststephouse.org").status == "success"
    assert service.run(first).status == "success"
    assert service.sync_organization("first-step-house").status == "success"


def test_a_prepared_run_no_worker_started_frees_its_scope_after_its_hold(
    service: SyncService, pq: App, clock: ManualClock
) -> None:
    dead = service.prepare_organization("first-step-house")  # its worker never runs it
    clock.advance(PREPARED_HOLD - timedelta(seconds=1))
    with pytest.raises(SyncInProgress):
        service.prepare_organization("first-step-house")
    clock.advance(timedelta(seconds=2))
    taken_over = service.prepare_organization("first-step-house")
    assert taken_over.run_id != dead.run_id
    assert service.run(taken_over).status == "success"
    with Session(pq.engine) as session:
        closed = session.get(SyncLog, dead.run_id)
    # No worker ever took it up: it says so (not that a worker crashed).
    assert closed is not None and (closed.status, closed.error_message) == (
        "failed",
        "no worker took the run: it waited in the queue until its hold ran out",
    )


class FailsForOnePatient:
    """The real client, except that one patient's `client` query fails (a unit-level fault)."""

    def __init__(self, real: AppointmentSource, failing_email: str) -> None:
        self.real = real
        self.failing_email = failing_email

    def counting(self) -> AbstractContextManager[RequestTally]:
        return self.real.counting()

    def get_appointment(self, appointment_id: str) -> IntakeQAppointment | None:
        return self.real.get_appointment(appointment_id)

    def clients(self, search: str | None = None) -> Iterator[Client]:
        return self.real.clients(search)

    def appointment_pages(self, query: AppointmentQuery) -> Generator[list[Record], None, None]:
        if query.client == self.failing_email:
            raise IntakeQServerError(500, "/appointments")
        yield from self.real.appointment_pages(query)


def test_a_failing_patient_does_not_stop_the_organizations_run(
    pq: App, sim: SimulatorServer, clock: ManualClock
) -> None:
    failing = sim.dataset.special.email_superstring
    email = failing.directory_email or failing.email
    service = SyncService(pq.engine, FailsForOnePatient(pq.intakeq, email), clock=clock)
    with Session(pq.engine) as session:
        # What a large practice's last full fetch would have taught: per-patient is cheaper.
        session.add(SyncState(name=PRACTICE_DENSITY, value={"per_day": 500.0}, updated_at=clock()))
        session.commit()
    result = service.sync_organization("first-step-house")
    assert result.plan == "per_patient"
    assert result.status == "partial"
    failed = [p for p in result.patients if p.error]
    assert [p.patient_name for p in failed] == [failing.name]
    assert result.summary.errors == 1
    s = result.summary
    assert s.seen == s.new + s.updated + s.unchanged + s.deleted + s.errors
    start, end = sim.dataset.default_window()
    fsh = {c.client_id for c in sim.dataset.fsh_patients}
    everyone = {a.id for a in sim.dataset.appointments_in_window(start, end, fsh)}
    others = {
        a.id for a in sim.dataset.appointments_in_window(start, end, fsh - {failing.client_id})
    }
    with Session(pq.engine) as session:
        stored = set(session.scalars(select(Appointment.pq_appointment_id)))
        log = session.get(SyncLog, result.run_id)
    # Every other patient is complete; the failed one's appointments are not there.
    assert stored == others
    assert stored != everyone
    assert log is not None and log.status == "partial"
    assert log.details["patients"][str(failed[0].patient_id)]["state"] == "failed"
