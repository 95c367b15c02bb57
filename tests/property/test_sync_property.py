"""Property: whatever IntakeQ does, no appointment live there is ever deleted here, and a
final full sync leaves every field we store equal to IntakeQ's.

Hypothesis interleaves provider actions in the simulator (create, reschedule, cancel, delete,
restore, change provider or service, a client's email changing), changes that land between
the pages of a window fetch, a patient run overlapping an organisation's run, failed
requests, clock jumps, and patient, organisation (two organisations, one in New York while
the practice is in Denver) and nightly syncs. After every run, failed and partial ones
included, each appointment that run deleted is deleted in IntakeQ; after a final full
organisation sync the two windows are equal, field by field.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
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

from intakeq_sim import (
    STATUSES,
    AppointmentChanges,
    ManualClock,
    SimConfig,
    SimError,
    SimulatorServer,
    build_dataset,
    demo_directory,
)
from page_hooks import PageHooks
from pqsync.db.tables import (
    Appointment,
    IntakeQRequest,
    Organization,
    Patient,
    PatientActivity,
    Service,
    SyncLock,
    SyncLog,
    SyncState,
)
from pqsync.domain.status import map_status
from pqsync.domain.times import from_epoch_ms
from pqsync.intakeq.budget import MemoryBudget
from pqsync.intakeq.client import IntakeQClient
from pqsync.services.directory import DirectoryFile, import_directory
from pqsync.services.sync import SyncResult, SyncService
from pqsync.settings import SIMULATOR_API_KEY

START = datetime(2025, 10, 24, 16, 0, tzinfo=UTC)
TODAY = date(2025, 10, 24)
ORG = "first-step-house"
# A second organisation in another zone than the practice's, sharing some patients.
NYC = "nyc-house"


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
        self.hooks = PageHooks()
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
            transport=self.hooks,
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

    @rule(pick=st.integers(0, 10_000), later=st.booleans())
    def reschedule_out_of_the_window(self, pick: int, later: bool) -> None:
        """A stored appointment leaves the window: absent from the next fetch, yet live."""
        with Session(World.engine) as session:
            stored = sorted(
                session.scalars(
                    select(Appointment.pq_appointment_id).where(Appointment.deleted_at.is_(None))
                )
            )
        ds = self.sim.dataset
        live = [i for i in stored if ds.appointments[i].deleted_ms is None]
        if live:
            target = live[pick % len(live)]
            shift = timedelta(days=200 if later else -200)
            moved = ds.appointments[target].start + shift
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

    @rule(patient=st.integers(0, 11), suffix=st.integers(0, 99))
    def email_changes_in_intakeq(self, patient: int, suffix: int) -> None:
        client_id = self.fsh_ids[patient]
        with Session(World.engine) as session:
            known = session.scalar(
                select(Patient.intakeq_client_id).where(Patient.intakeq_client_id == client_id)
            )
        if known is not None:  # before the ClientId is learned, nobody could match them
            self.sim.app.store.change_client_email(client_id, f"moved{suffix}@mail.example")

    @rule(pick=st.integers(0, 10_000), deleting=st.booleans(), days=st.integers(-30, 30))
    def intakeq_changes_between_pages(self, pick: int, deleting: bool, days: int) -> None:
        """Armed now, it lands after page 1 of the next window fetch."""

        def change() -> None:
            target = self._fsh_appointment(pick)
            if target is None:
                return
            if deleting:
                self.sim.app.store.delete(target)
            else:
                moved = self.sim.dataset.appointments[target].start + timedelta(days=days)
                self.sim.app.store.update(target, AppointmentChanges(start=moved))

        self.hooks.after_page["1"] = change

    # -- our side ------------------------------------------------------------------------

    def check_run(self, result: SyncResult) -> None:
        """Whatever the run's outcome, what it deleted is deleted in IntakeQ."""
        assert (result.status == "failed") == self.failing, result.error
        with Session(World.engine) as session:
            deleted = session.scalars(
                select(Appointment.pq_appointment_id)
                .join(PatientActivity, PatientActivity.appointment_id == Appointment.id)
                .where(
                    PatientActivity.sync_log_id == result.run_id,
                    PatientActivity.activity_type == "appointment_deleted",
                )
            ).all()
        ds = self.sim.dataset
        with ds.lock:
            live = [pq_id for pq_id in deleted if ds.appointments[pq_id].deleted_ms is None]
        assert not live, f"run {result.run_id} deleted appointments live in IntakeQ: {live}"

    @rule(patient=st.integers(0, 11))
    def sync_patient(self, patient: int) -> None:
        self.check_run(self.service.sync_patient(self.fsh_emails[patient]))

    @rule(org=st.sampled_from([ORG, NYC]))
    def sync_org(self, org: str) -> None:
        self.check_run(self.service.sync_organization(org))

    @rule(patient=st.integers(0, 11))
    def a_patient_run_overlaps_the_org_run(self, patient: int) -> None:
        """A patient's run (the button, a webhook) runs between the org run's pages."""
        patient_runs: list[SyncResult] = []

        def patient_run() -> None:
            worker = threading.Thread(
                target=lambda: patient_runs.append(
                    self.service.sync_patient(self.fsh_emails[patient])
                )
            )
            worker.start()
            worker.join()

        self.hooks.after_page.setdefault("1", patient_run)
        self.check_run(self.service.sync_organization(ORG))
        for result in patient_runs:
            self.check_run(result)

    @rule()
    def sync_nightly(self) -> None:
        self.check_run(self.service.sync_nightly())

    @invariant()
    def no_duplicates_and_no_strangers(self) -> None:
        with Session(World.engine) as session:
            rows = session.execute(
                select(Appointment.pq_appointment_id, Appointment.intakeq_client_id)
            ).all()
        assert len({r[0] for r in rows}) == len(rows)
        assert all(r[1] in self.fsh_ids for r in rows)

    def stored_services(self) -> list[Service]:
        with Session(World.engine) as session:
            return list(session.scalars(select(Service)))

    def check_windows_equal(self) -> None:
        """The final, fault-free full sync; then our window must be IntakeQ's."""
        self.sim.configure(fail_rate=0.0)
        self.failing = False
        self.hooks.after_page.clear()
        result = self.service.sync_organization(ORG)
        assert result.status == "success", result.error
        self.check_run(result)
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
        services = {s.intakeq_service_id: s.id for s in self.stored_services()}
        for pq_id, row in ours.items():
            source = theirs[pq_id]
            rendered = self.sim.dataset.render(source)
            assert row.start_time == source.start
            assert row.end_time == source.start + timedelta(minutes=source.duration)
            assert row.intakeq_status == source.status
            assert row.status == map_status(source.status)
            assert row.intakeq_practitioner_id == source.practitioner_id
            assert row.intakeq_client_id == source.client_id
            assert row.service_id == services.get(source.service_id)
            assert row.location_name == rendered["LocationName"]
            assert row.intakeq_last_modified == from_epoch_ms(source.modified_ms)
            # Every other field we keep is IntakeQ's current value.
            assert {k: v for k, v in rendered.items() if k in row.extra} == row.extra


class FinalCheckMachine(SyncMachine):
    def teardown(self) -> None:
        try:
            self.check_windows_equal()
        finally:
            super().teardown()


@pytest.fixture
def world(engine: Engine) -> Iterator[None]:
    dataset = build_dataset(1, TODAY)
    directory = demo_directory(dataset)
    directory["organizations"].append(
        {"slug": NYC, "name": "NYC House", "timezone": "America/New_York"}
    )
    # A third of First Step House's patients are NYC House's too.
    directory["affiliations"] += [
        {"patient": p["email"], "organization": NYC} for p in directory["patients"][::3]
    ]
    import_directory(engine, DirectoryFile.model_validate(directory))
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
