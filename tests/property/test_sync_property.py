"""Property: whatever IntakeQ does between syncs, a full sync leaves our window equal to IntakeQ's.

Hypothesis interleaves provider actions in the simulator (create, reschedule, cancel, delete,
restore, change provider or service), failed requests, clock jumps, and patient, organisation
and nightly syncs; after a final full organisation sync it compares the two windows.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Engine, delete, select, update
from sqlalchemy.orm import Session

from pqsync.db.tables import (
    Appointment,
    IntakeQRequest,
    Organization,
    Patient,
    PatientActivity,
    SyncLock,
    SyncLog,
    SyncState,
)
from pqsync.domain.status import map_status
from pqsync.intakeq.budget import MemoryBudget
from pqsync.intakeq.client import IntakeQClient
from pqsync.intakeq.simulator import (
    STATUSES,
    AppointmentChanges,
    ManualClock,
    SimConfig,
    SimError,
    SimulatorServer,
    build_dataset,
    demo_directory,
)
from pqsync.services.directory import DirectoryFile, import_directory
from pqsync.services.sync import SyncService
from pqsync.settings import SIMULATOR_API_KEY

START = datetime(2025, 10, 24, 16, 0, tzinfo=UTC)
TODAY = date(2025, 10, 24)
ORG = "first-step-house"


class World:
    """What every example shares: the database with the directory imported once."""

    engine: ClassVar[Engine]
    learned_ids: ClassVar[dict[Any, int | None]]

    @classmethod
    def reset_database(cls) -> None:
        with Session(cls.engine) as session, session.begin():
            for table in (
                PatientActivity,
                Appointment,
                SyncLog,
                SyncState,
                SyncLock,
                IntakeQRequest,
            ):
                session.execute(delete(table))
            for patient_id, client_id in cls.learned_ids.items():
                session.execute(
                    update(Patient)
                    .where(Patient.id == patient_id)
                    .values(intakeq_client_id=client_id)
                )


class SyncMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        World.reset_database()
        self.clock = ManualClock(START)
        self.sim = SimulatorServer(
            today=TODAY,
            clock=self.clock,
            config=SimConfig(minute_limit=None, daily_limit=None, fault_kinds=("error500", "drop")),
        ).start()
        self.client = IntakeQClient(
            self.sim.base_url,
            SIMULATOR_API_KEY,
            budget=MemoryBudget(
                minute_limit=100_000, daily_limit=100_000, clock=self.clock, sleep=lambda _s: None
            ),
            max_retries=1,
            rate_limit_wait=0,
            sleep=lambda _s: None,
            timeout=5,
        )
        self.service = SyncService(World.engine, self.client, clock=self.clock)
        dataset = self.sim.dataset
        self.fsh_ids = sorted(c.client_id for c in dataset.fsh_patients)
        self.fsh_emails = [c.directory_email or c.email for c in dataset.fsh_patients]
        self.practitioners = [p.id for p in dataset.practitioners]
        self.services = [s.id for s in dataset.services]
        self.failing = False

    def teardown(self) -> None:
        self.client.close()
        self.sim.stop()

    # -- IntakeQ side ------------------------------------------------------------------

    def _fsh_appointment(self, pick: int, *, deleted: bool = False) -> str | None:
        ds = self.sim.dataset
        with ds.lock:
            ids = sorted(
                a.id
                for a in ds.appointments.values()
                if a.client_id in self.fsh_ids and (a.deleted_ms is not None) == deleted
            )
        return ids[pick % len(ids)] if ids else None

    @rule(
        patient=st.integers(0, 11),
        day=st.integers(-95, 95),
        hour=st.integers(7, 20),
        practitioner=st.integers(0, 10),
        status=st.sampled_from(STATUSES),
    )
    def create(self, patient: int, day: int, hour: int, practitioner: int, status: str) -> None:
        start = datetime.combine(
            self.clock().date() + timedelta(days=day), datetime.min.time(), tzinfo=UTC
        ) + timedelta(hours=hour + 7)
        self.sim.app.store.create(
            client_id=self.fsh_ids[patient],
            practitioner_id=self.practitioners[practitioner % len(self.practitioners)],
            service_id=self.services[0],
            location_id=self.sim.dataset.locations[0].id,
            status=status,
            start=start,
        )

    @rule(pick=st.integers(0, 10_000), days=st.integers(-100, 100), minutes=st.integers(0, 600))
    def reschedule(self, pick: int, days: int, minutes: int) -> None:
        target = self._fsh_appointment(pick)
        if target is not None:
            moved = self.sim.dataset.appointments[target].start + timedelta(
                days=days, minutes=minutes
            )
            self.sim.app.store.update(target, AppointmentChanges(start=moved))

    @rule(pick=st.integers(0, 10_000), status=st.sampled_from(STATUSES))
    def change_status(self, pick: int, status: str) -> None:
        target = self._fsh_appointment(pick)
        if target is not None:
            self.sim.app.store.update(target, AppointmentChanges(status=status))

    @rule(pick=st.integers(0, 10_000))
    def cancel(self, pick: int) -> None:
        target = self._fsh_appointment(pick)
        if target is not None:
            self.sim.app.store.cancel(target, "changed plans")

    @rule(pick=st.integers(0, 10_000), practitioner=st.integers(0, 10), service=st.integers(0, 10))
    def change_provider_or_service(self, pick: int, practitioner: int, service: int) -> None:
        target = self._fsh_appointment(pick)
        if target is not None:
            self.sim.app.store.update(
                target,
                AppointmentChanges(
                    practitioner_id=self.practitioners[practitioner % len(self.practitioners)],
                    service_id=self.services[service % len(self.services)],
                ),
            )

    @rule(pick=st.integers(0, 10_000))
    def delete(self, pick: int) -> None:
        target = self._fsh_appointment(pick)
        if target is not None:
            self.sim.app.store.delete(target)

    @rule(pick=st.integers(0, 10_000))
    def restore(self, pick: int) -> None:
        target = self._fsh_appointment(pick, deleted=True)
        if target is not None:
            with contextlib.suppress(SimError):
                self.sim.app.store.restore(target)

    @rule(hours=st.integers(1, 24 * 9))
    def time_passes(self, hours: int) -> None:
        self.clock.advance(timedelta(hours=hours))

    @rule()
    def requests_start_failing(self) -> None:
        self.failing = True
        self.sim.configure(fail_rate=1.0)

    @precondition(lambda self: self.failing)
    @rule()
    def requests_work_again(self) -> None:
        self.failing = False
        self.sim.configure(fail_rate=0.0)

    # -- our side ------------------------------------------------------------------------

    @rule(patient=st.integers(0, 11))
    def sync_patient(self, patient: int) -> None:
        result = self.service.sync_patient(self.fsh_emails[patient])
        assert result.summary.seen >= 0
        assert (result.status == "failed") == self.failing

    @rule()
    def sync_org(self) -> None:
        result = self.service.sync_organization(ORG)
        assert (result.status == "failed") == self.failing

    @rule()
    def sync_nightly(self) -> None:
        result = self.service.sync_nightly()
        assert (result.status == "failed") == self.failing

    @invariant()
    def no_duplicates_and_no_strangers(self) -> None:
        with Session(World.engine) as session:
            rows = session.execute(
                select(Appointment.pq_appointment_id, Appointment.intakeq_client_id)
            ).all()
        assert len({r[0] for r in rows}) == len(rows)
        assert all(r[1] in self.fsh_ids for r in rows)

    def check_windows_equal(self) -> None:
        """The final, fault-free full sync; then our window must be IntakeQ's."""
        self.sim.configure(fail_rate=0.0)
        result = self.service.sync_organization(ORG)
        assert result.status == "success", result.error
        s = result.summary
        assert s.seen == s.new + s.updated + s.unchanged + s.deleted + s.errors
        with Session(World.engine) as session:
            org = session.scalars(select(Organization).filter_by(slug=ORG)).one()
            window = self.service.organization_window(org)
            ours = {
                a.pq_appointment_id: a
                for a in session.scalars(
                    select(Appointment).where(Appointment.deleted_at.is_(None))
                )
                if window.start
                <= a.start_time.astimezone(self.sim.dataset.zone).date()
                <= window.end
            }
        theirs = {
            a.id: a
            for a in self.sim.dataset.appointments_in_window(
                window.start, window.end, set(self.fsh_ids)
            )
        }
        missing, extra = set(theirs) - set(ours), set(ours) - set(theirs)
        assert not missing and not extra, f"missing {sorted(missing)}, extra {sorted(extra)}"
        for pq_id, row in ours.items():
            source = theirs[pq_id]
            assert row.start_time == source.start
            assert row.intakeq_status == source.status
            assert row.status == map_status(source.status)
            assert row.intakeq_practitioner_id == source.practitioner_id
            assert row.intakeq_client_id == source.client_id


class FinalCheckMachine(SyncMachine):
    def teardown(self) -> None:
        try:
            self.check_windows_equal()
        finally:
            super().teardown()


@pytest.fixture
def world(engine: Engine) -> Iterator[None]:
    dataset = build_dataset(1, TODAY)
    import_directory(engine, DirectoryFile.model_validate(demo_directory(dataset)))
    with Session(engine) as session:
        World.learned_ids = dict(
            session.execute(select(Patient.id, Patient.intakeq_client_id)).all()
        )
    World.engine = engine
    yield


def test_after_any_history_a_full_sync_makes_our_window_equal_intakeqs(world: None) -> None:
    random.seed(0)
    run_state_machine_as_test(
        FinalCheckMachine,
        settings=settings(
            max_examples=int(os.environ.get("PQSYNC_PROPERTY_EXAMPLES", "20")),
            stateful_step_count=12,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
