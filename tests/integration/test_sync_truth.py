"""Every "success" and "synced" is true: the ways an appointment stayed missing, stale or
wrongly attributed while the run said `success`, each against the simulator on loopback.

The simulator's control API makes the provider's changes (merges, moves, shared emails);
the assertions compare what we store with what IntakeQ holds.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session

from intakeq_sim import AppointmentChanges, ManualClock, SimulatorServer, demo_directory
from page_hooks import PageHooks
from pqsync.bootstrap import App
from pqsync.db.engine import begin_write
from pqsync.db.tables import (
    Affiliation,
    Appointment,
    Organization,
    Patient,
    PatientActivity,
    SyncState,
)
from pqsync.domain.windows import Window
from pqsync.intakeq.budget import MemoryBudget
from pqsync.intakeq.client import IntakeQClient
from pqsync.services.directory import DirectoryFile, import_directory
from pqsync.services.sync import SyncResult, SyncService
from pqsync.services.sync.locks import SyncLocks
from pqsync.services.sync.plan import PRACTICE_DENSITY
from pqsync.settings import SIMULATOR_API_KEY
from provider_side import book_at

ORG = "first-step-house"
DENVER = ZoneInfo("America/Denver")
PLANS = ("organization", "patient", "nightly")


def control(sim: SimulatorServer, method: str, path: str, **body: Any) -> Any:
    response = httpx.request(method, f"{sim.control_url}{path}", json=body or None)
    response.raise_for_status()
    return response.json()


def book(sim: SimulatorServer, client_id: int, days_ahead: int) -> str:
    day = sim.dataset.today + timedelta(days=days_ahead)
    created = control(
        sim, "POST", "/appointments", ClientId=client_id, StartDateLocal=f"{day}T10:00:00"
    )
    return str(created["Id"])


def live(
    engine: Engine, patient_id: uuid.UUID | None = None, window: Window | None = None
) -> dict[str, Appointment]:
    """What we show: live rows (in `window`, judged in the practice's zone, when given)."""
    with Session(engine) as session:
        query = select(Appointment).where(Appointment.deleted_at.is_(None))
        if patient_id is not None:
            query = query.where(Appointment.patient_id == patient_id)
        if window is not None:
            start, end = window.bounds(DENVER)
            query = query.where(Appointment.start_time >= start, Appointment.start_time < end)
        return {a.pq_appointment_id: a for a in session.scalars(query)}


def shown(sim: SimulatorServer, engine: Engine, patient_id: uuid.UUID) -> set[str]:
    """A patient's live appointments in the default window (an incremental run also stores
    changed appointments beyond it)."""
    return set(live(engine, patient_id, Window(*sim.dataset.default_window())))


def truth(sim: SimulatorServer, client_id: int) -> set[str]:
    start, end = sim.dataset.default_window()
    return {a.id for a in sim.dataset.appointments_in_window(start, end, {client_id})}


def patient_by_email(engine: Engine, email: str) -> Patient:
    with Session(engine) as session:
        return session.scalars(select(Patient).where(Patient.email == email.lower())).one()


def last_synced(engine: Engine, patient_id: uuid.UUID) -> datetime | None:
    with Session(engine) as session:
        return session.scalar(
            select(Affiliation.last_practiceq_sync_at).where(Affiliation.patient_id == patient_id)
        )


def activity(engine: Engine, patient_id: uuid.UUID, kind: str) -> list[str]:
    with Session(engine) as session:
        return list(
            session.scalars(
                select(PatientActivity.description).where(
                    PatientActivity.patient_id == patient_id,
                    PatientActivity.activity_type == kind,
                )
            )
        )


def sync_all_promise(service: SyncService, pq: App) -> int:
    """At most how many requests Sync all of the organisation says it will take."""
    with Session(pq.engine) as session:
        org = session.scalars(select(Organization).filter_by(slug=ORG)).one()
        patients = list(
            session.scalars(select(Affiliation.patient_id).filter_by(organization_id=org.id))
        )
        return service.organization_requests(session, patients, service.organization_window(org))


def runner(service: SyncService, plan: str, email: str) -> Callable[[], SyncResult]:
    if plan == "organization":
        return lambda: service.sync_organization(ORG)
    if plan == "patient":
        return lambda: service.sync_patient(email)
    return service.sync_nightly


def settle(service: SyncService, clock: ManualClock, plan: str) -> None:
    """Bring the store up to date, so that the plan under test runs as it would on a
    later day (the nightly then runs incrementally)."""
    assert service.sync_organization(ORG).status == "success"
    if plan == "nightly":
        assert service.sync_nightly().plan == "window"
    clock.advance(timedelta(minutes=30))


# -- finding 1: a patient added after go-live ----------------------------------------------


def test_a_patient_added_after_go_live_gets_their_appointments_from_the_nightly(
    service: SyncService, sim: SimulatorServer, pq: App, clock: ManualClock
) -> None:
    nadia = control(
        sim, "POST", "/clients", FirstName="Nadia", LastName="Novak",
        Email="nadia.novak@firststephouse.org", Organization=ORG,
    )  # fmt: skip
    booked = {book(sim, nadia["ClientId"], days) for days in (10, 17, 24, 31, 38)}
    clock.advance(timedelta(days=3))  # booked before the nights below
    assert service.sync_nightly().plan == "window"
    clock.advance(timedelta(days=1))
    assert service.sync_nightly().plan == "incremental"
    # She moves in: the directory now lists her; IntakeQ has not touched her bookings since.
    import_directory(pq.engine, DirectoryFile.model_validate(demo_directory(sim.dataset)))
    clock.advance(timedelta(days=1))

    result = service.sync_nightly()

    assert result.status == "success", result.incomplete
    patient = patient_by_email(pq.engine, "nadia.novak@firststephouse.org")
    assert set(live(pq.engine, patient.id)) == booked
    assert last_synced(pq.engine, patient.id) is not None
    # The next nights are incremental again, and cheap.
    clock.advance(timedelta(days=1))
    quiet = service.sync_nightly()
    assert quiet.plan == "incremental" and quiet.status == "success"


def test_the_nightly_reconciles_the_whole_window_weekly_whatever_the_watermark(
    service: SyncService, clock: ManualClock
) -> None:
    plans = []
    for _ in range(8):
        plans.append(service.sync_nightly().plan)
        clock.advance(timedelta(days=1))
    assert plans == ["window", *["incremental"] * 6, "window"]


def test_a_patient_whose_email_changes_in_the_directory_is_fetched_whole_that_night(
    service: SyncService, sim: SimulatorServer, pq: App, clock: ManualClock
) -> None:
    ann = sim.dataset.special.email_substring
    control(sim, "POST", f"/clients/{ann.client_id}/email", Email="ann.lee@mail.example")
    service.sync_nightly()
    clock.advance(timedelta(days=2))
    directory = demo_directory(sim.dataset)
    for entry in directory["patients"]:
        if entry["email"] == ann.email:
            entry["email"] = "ann.lee@mail.example"
    for entry in directory["affiliations"]:
        if entry["patient"] == ann.email:
            entry["patient"] = "ann.lee@mail.example"
    import_directory(pq.engine, DirectoryFile.model_validate(directory))

    result = service.sync_nightly()

    assert result.plan == "incremental+backfill"
    assert result.status == "success", result.incomplete
    patient = patient_by_email(pq.engine, "ann.lee@mail.example")
    assert shown(sim, pq.engine, patient.id) == truth(sim, ann.client_id)


# -- the window moves with the clock ---------------------------------------------------------


def window_on(clock: ManualClock) -> Window:
    """The default window (90 days each side) of the practice's today."""
    today = clock().astimezone(DENVER).date()
    return Window(today - timedelta(days=90), today + timedelta(days=90))


def stored_as_intakeq_holds(sim: SimulatorServer, pq: App, window: Window) -> None:
    """Our live rows in `window` are exactly IntakeQ's appointments of our patients there."""
    fsh = {c.client_id for c in sim.dataset.fsh_patients}
    wanted = {a.id for a in sim.dataset.appointments_in_window(window.start, window.end, fsh)}
    assert set(live(pq.engine, window=window)) == wanted


def book_beyond_the_window(sim: SimulatorServer, clock: ManualClock) -> set[str]:
    """Bookings on the days the window's end reaches 2 to 6 days from now, made now (so
    long before the incremental run below that `updatedSince` never returns them)."""
    end = window_on(clock).end
    patients = sim.dataset.fsh_patients[:6]
    return {
        book(sim, client.client_id, (end - sim.dataset.today).days + 3 + n % 4)
        for n, client in enumerate(patients)
    }


def left_the_window(pq: App, before: Window, now: Window) -> set[str]:
    """Appointments we stored in days that were in `before` and are no longer in `now`."""
    return set(live(pq.engine, window=Window(before.start, now.start - timedelta(days=1))))


def test_the_days_entering_the_window_come_with_the_incremental_nightly(
    service: SyncService, sim: SimulatorServer, pq: App, clock: ManualClock
) -> None:
    booked = book_beyond_the_window(sim, clock)
    clock.advance(timedelta(days=2))
    first = window_on(clock)
    assert service.sync_nightly().plan == "window"
    assert not booked & set(live(pq.engine))  # beyond that night's window
    clock.advance(timedelta(hours=99))  # the window's end moves four days on
    moved = window_on(clock)
    leaving = left_the_window(pq, first, moved)
    assert leaving

    result = service.sync_nightly()

    assert result.plan == "incremental"
    assert result.status == "success", result.incomplete
    assert booked <= set(live(pq.engine))
    stored_as_intakeq_holds(sim, pq, moved)
    # The days that left the window are out of scope, not gone: nothing there is deleted,
    # by this run or by the weekly reconcile.
    assert leaving <= set(live(pq.engine))
    clock.advance(timedelta(days=3))
    reconcile = service.sync_nightly()
    assert reconcile.plan == "window" and reconcile.status == "success", reconcile.incomplete
    assert leaving <= set(live(pq.engine))
    stored_as_intakeq_holds(sim, pq, window_on(clock))


class FailsDateListings(httpx.BaseTransport):
    """The real HTTP transport; while `failing`, the simulator answers every listing by
    date without a `client` filter (a window or new-days fetch) with HTTP 500."""

    def __init__(self, sim: SimulatorServer) -> None:
        self.sim = sim
        self.real = httpx.HTTPTransport()
        self.failing = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        by_date = "startDate" in params and "client" not in params
        fail = self.failing and by_date
        if fail:
            self.sim.configure(fail_rate=1.0, fault_kinds=("error500",))
        try:
            response = self.real.handle_request(request)
            response.read()
        finally:
            if fail:
                self.sim.configure(fail_rate=0.0)
        return response

    def close(self) -> None:
        self.real.close()


@pytest.fixture
def date_listings(sim: SimulatorServer) -> FailsDateListings:
    return FailsDateListings(sim)


@pytest.fixture
def failing_service(
    pq: App, sim: SimulatorServer, clock: ManualClock, date_listings: FailsDateListings
) -> Iterator[SyncService]:
    budget = MemoryBudget(
        minute_limit=100_000, daily_limit=100_000, clock=clock, sleep=lambda _s: None
    )
    client = IntakeQClient(
        sim.base_url,
        SIMULATOR_API_KEY,
        budget=budget,
        max_retries=1,
        sleep=lambda _s: None,
        transport=date_listings,
    )
    with client:
        yield SyncService(pq.engine, client, clock=clock)


def test_an_incremental_nightly_that_cannot_fetch_the_new_days_is_partial_until_it_does(
    failing_service: SyncService,
    date_listings: FailsDateListings,
    sim: SimulatorServer,
    pq: App,
    clock: ManualClock,
) -> None:
    service = failing_service
    booked = book_beyond_the_window(sim, clock)
    clock.advance(timedelta(days=2))
    assert service.sync_nightly().plan == "window"
    clock.advance(timedelta(hours=99))
    date_listings.failing = True

    result = service.sync_nightly()

    assert result.plan == "incremental"
    assert result.status == "partial"
    end = window_on(clock).end
    assert any("days new to the sync window" in r and str(end) in r for r in result.incomplete), (
        result.incomplete
    )
    assert not booked & set(live(pq.engine))
    # The next night asks for those days again (and fetches whole whom the partial run
    # did not stamp).
    date_listings.failing = False
    clock.advance(timedelta(days=1))
    later = service.sync_nightly()
    assert later.status == "success", later.incomplete
    assert booked <= set(live(pq.engine))
    stored_as_intakeq_holds(sim, pq, window_on(clock))


# -- finding 6 and 10: partial means partial -------------------------------------------------


def test_an_incomplete_patient_fetch_is_partial_and_not_stamped(
    service: SyncService, sim: SimulatorServer, pq: App, clock: ManualClock
) -> None:
    ann = sim.dataset.special.email_substring
    assert service.sync_patient(ann.email).status == "success"
    patient = patient_by_email(pq.engine, ann.email)
    stamped = last_synced(pq.engine, patient.id)
    assert stamped is not None
    control(sim, "POST", f"/clients/{ann.client_id}/email", Email="ann.lee@mail.example")
    clock.advance(timedelta(hours=1))

    result = service.sync_patient(ann.email)

    assert result.status == "partial"
    assert any("returned none of this patient's appointments" in r for r in result.incomplete)
    assert last_synced(pq.engine, patient.id) == stamped
    assert shown(sim, pq.engine, patient.id) == truth(sim, ann.client_id)  # nothing lost


def test_a_known_patient_whose_email_changed_is_partial_even_with_nothing_stored(
    service: SyncService, sim: SimulatorServer, pq: App
) -> None:
    """Nothing stored to miss, nothing returned for the email: their ClientId no longer
    carries it, so their appointments may be under another email, not absent."""
    client = sim.dataset.clients_by_id[sim.dataset.special.known_client_ids[0]]
    email = client.directory_email or client.email
    assert patient_by_email(pq.engine, email).intakeq_client_id == client.client_id
    control(sim, "POST", f"/clients/{client.client_id}/email", Email="moved@mail.example")
    booked = book(sim, client.client_id, 3)
    day = sim.dataset.today + timedelta(days=3)

    result = service.sync_patient(email, window=Window(day, day))

    assert result.status == "partial", result.warnings
    assert any("returned none of this patient's appointments" in r for r in result.incomplete)
    assert booked not in live(pq.engine)
    assert last_synced(pq.engine, patient_by_email(pq.engine, email).id) is None


def test_more_absent_appointments_than_a_run_rechecks_make_it_partial_until_done(
    service: SyncService, sim: SimulatorServer, pq: App, clock: ManualClock
) -> None:
    heavy = sim.dataset.special.heavy
    assert service.sync_organization(ORG).status == "success"
    gone = sorted(truth(sim, heavy.client_id))[:30]
    for pq_id in gone:
        control(sim, "POST", f"/appointments/{pq_id}/delete")
    clock.advance(timedelta(hours=1))

    first = service.sync_organization(ORG)

    assert first.status == "partial"
    assert first.summary.deleted == 25
    assert any("could not all be checked" in r for r in first.incomplete)
    patient = patient_by_email(pq.engine, heavy.email)
    assert last_synced(pq.engine, patient.id) is not None
    second = service.sync_organization(ORG)
    assert second.status == "success", second.incomplete
    assert not set(gone) & set(live(pq.engine))


def test_re_checks_are_limited_per_run_and_inside_what_sync_all_promised(
    service: SyncService, sim: SimulatorServer, pq: App, clock: ManualClock
) -> None:
    assert service.sync_organization(ORG).status == "success"
    with Session(pq.engine) as session:
        # A large practice's size: the per-patient plan is the cheaper one.
        state = session.get(SyncState, PRACTICE_DENSITY)
        assert state is not None
        state.value = {"per_day": 500.0}
        session.commit()
    patients = [c for c in sim.dataset.fsh_patients if len(truth(sim, c.client_id)) >= 6][:6]
    assert len(patients) == 6
    for client in patients:  # 36 deletions over 6 patients
        for pq_id in sorted(truth(sim, client.client_id))[:6]:
            control(sim, "POST", f"/appointments/{pq_id}/delete")
    clock.advance(timedelta(minutes=30))
    promised = sync_all_promise(service, pq)

    result = service.sync_organization(ORG)

    assert result.plan == "per_patient"
    assert result.summary.deleted == 25  # the run's re-checks, over all its patients
    assert result.status == "partial"
    assert result.requests_made <= promised


# -- finding 2: a ClientId that changes ------------------------------------------------------


@pytest.mark.parametrize("plan", PLANS)
def test_a_merged_client_takes_the_patients_appointments_and_client_id_along(
    plan: str, service: SyncService, sim: SimulatorServer, pq: App, clock: ManualClock
) -> None:
    rosa = next(c for c in sim.dataset.fsh_patients if c.first_name == "Rosa")
    settle(service, clock, plan)
    kept = control(sim, "POST", "/clients", FirstName="Rosa", LastName="Delgado", Email=rosa.email)
    control(sim, "POST", f"/clients/{rosa.client_id}/merge", IntoClientId=kept["ClientId"])
    booked = book(sim, kept["ClientId"], 12)
    clock.advance(timedelta(minutes=30))

    result = runner(service, plan, rosa.email)()

    assert result.status == "success", result.incomplete
    patient = patient_by_email(pq.engine, rosa.email)
    assert patient.intakeq_client_id == kept["ClientId"]
    mine = live(pq.engine, patient.id)
    assert booked in mine
    assert shown(sim, pq.engine, patient.id) == truth(sim, kept["ClientId"])
    assert {a.intakeq_client_id for a in mine.values()} == {kept["ClientId"]}
    assert activity(pq.engine, patient.id, "intakeq_client_changed")


# -- finding 3: two IntakeQ clients with one email -------------------------------------------


@pytest.mark.parametrize("plan", ("organization", "patient"))
def test_two_clients_sharing_an_email_show_neither_and_flag_the_patient(
    plan: str, service: SyncService, sim: SimulatorServer, pq: App
) -> None:
    marcus = sim.dataset.special.case_mismatch
    twin = control(sim, "POST", "/clients", FirstName="Mia", LastName="Hill", Email=marcus.email)
    book(sim, twin["ClientId"], 5)

    result = runner(service, plan, marcus.directory_email or "")()

    assert result.status == "partial"
    assert any("2 IntakeQ clients share this patient's email" in r for r in result.incomplete)
    patient = patient_by_email(pq.engine, marcus.directory_email or "")
    assert patient.intakeq_client_id is None
    assert live(pq.engine, patient.id) == {}
    assert last_synced(pq.engine, patient.id) is None


@pytest.mark.parametrize("narrow", (True, False))
def test_a_merge_onto_an_email_a_family_member_shares_is_flagged_not_success(
    narrow: bool, service: SyncService, sim: SimulatorServer, pq: App
) -> None:
    """The patient's known ClientId is merged away into a new profile while a family member
    carries the same email, and we store none of the patient's appointments to link the new
    profile by: two clients carry the email, so neither is learned and the run says so."""
    client = sim.dataset.clients_by_id[sim.dataset.special.known_client_ids[0]]
    email = client.directory_email or client.email
    assert patient_by_email(pq.engine, email).intakeq_client_id == client.client_id
    family = control(sim, "POST", "/clients", FirstName="Kin", LastName="Family", Email=email)
    book(sim, family["ClientId"], 3)
    kept = control(sim, "POST", "/clients", FirstName="Re", LastName="Created", Email=email)
    control(sim, "POST", f"/clients/{client.client_id}/merge", IntoClientId=kept["ClientId"])
    booked = book(sim, kept["ClientId"], 3)
    day = sim.dataset.today + timedelta(days=3)

    window = Window(day, day) if narrow else None
    result = service.sync_organization(ORG, window=window)

    assert result.status == "partial", result.warnings
    assert any("2 IntakeQ clients share this patient's email" in r for r in result.incomplete)
    patient = patient_by_email(pq.engine, email)
    assert booked not in live(pq.engine)
    assert last_synced(pq.engine, patient.id) is None


@pytest.mark.parametrize("plan", PLANS)
def test_a_merged_profile_read_before_the_record_that_reveals_it_is_not_success(
    plan: str, service: SyncService, sim: SimulatorServer, pq: App, clock: ManualClock
) -> None:
    """The patient's profile is merged into a new one beside a family member on the same
    email, and a booking under the new profile is listed (latest first) before a stored
    appointment of theirs that reveals the merge: the booking was passed over before the
    ClientId followed, so the run may not say `success` without it."""
    client = sim.dataset.clients_by_id[sim.dataset.special.known_client_ids[0]]
    email = client.directory_email or client.email
    settle(service, clock, plan)
    patient = patient_by_email(pq.engine, email)
    stored = shown(sim, pq.engine, patient.id)
    assert stored, "precondition: the patient has stored appointments to reveal the merge"
    synced_before = last_synced(pq.engine, patient.id)
    family = control(sim, "POST", "/clients", FirstName="Kin", LastName="Family", Email=email)
    kept = control(sim, "POST", "/clients", FirstName="Re", LastName="Merged", Email=email)
    control(sim, "POST", f"/clients/{client.client_id}/merge", IntoClientId=kept["ClientId"])
    book(sim, family["ClientId"], 2)
    latest = max(live(pq.engine, patient.id).values(), key=lambda a: a.start_time).start_time
    booked = book(sim, kept["ClientId"], 89)
    latest_day = latest.astimezone(ZoneInfo(sim.dataset.timezone)).date()
    assert sim.dataset.today + timedelta(days=89) > latest_day, "precondition: listed first"
    clock.advance(timedelta(minutes=30))

    result = runner(service, plan, email)()

    assert booked not in live(pq.engine)  # passed over before the ClientId followed
    assert result.status == "partial", result.warnings
    assert last_synced(pq.engine, patient.id) == synced_before
    # The next run knows the new ClientId and is complete.
    clock.advance(timedelta(minutes=30))
    again = runner(service, plan, email)()
    assert again.status == "success", again.incomplete
    assert shown(sim, pq.engine, patient.id) == truth(sim, kept["ClientId"])


# -- finding 5: ownership in every plan ------------------------------------------------------


@pytest.mark.parametrize("plan", PLANS)
def test_an_appointment_moved_to_a_client_who_is_not_ours_leaves_the_patients_page(
    plan: str, service: SyncService, sim: SimulatorServer, pq: App, clock: ManualClock
) -> None:
    ann = sim.dataset.special.email_substring
    settle(service, clock, plan)
    moved = sorted(truth(sim, ann.client_id))[0]
    stranger = next(
        c
        for c in sim.dataset.clients
        if c.organization is None and ann.email not in c.email.lower()
    )
    control(sim, "POST", f"/appointments/{moved}/client", ClientId=stranger.client_id)
    clock.advance(timedelta(minutes=30))

    result = runner(service, plan, ann.email)()

    assert result.ok
    patient = patient_by_email(pq.engine, ann.email)
    assert moved not in live(pq.engine)
    assert shown(sim, pq.engine, patient.id) == truth(sim, ann.client_id)
    assert any(moved in d for d in activity(pq.engine, patient.id, "appointment_removed"))


@pytest.mark.parametrize("plan", PLANS)
def test_an_appointment_moved_to_another_of_our_patients_moves_with_it(
    plan: str, service: SyncService, sim: SimulatorServer, pq: App, clock: ManualClock
) -> None:
    rosa = next(c for c in sim.dataset.fsh_patients if c.first_name == "Rosa")
    austin = sim.dataset.special.plus_address
    settle(service, clock, plan)
    moved = sorted(truth(sim, rosa.client_id))[0]
    control(sim, "POST", f"/appointments/{moved}/client", ClientId=austin.client_id)
    clock.advance(timedelta(minutes=30))

    # The per-patient plan runs for Rosa, the patient the appointment left.
    result = runner(service, plan, rosa.email)()

    assert result.status == "success", result.incomplete
    to = patient_by_email(pq.engine, austin.email)
    away = patient_by_email(pq.engine, rosa.email)
    assert moved in live(pq.engine, to.id)
    assert shown(sim, pq.engine, away.id) == truth(sim, rosa.client_id)
    assert any(moved in d for d in activity(pq.engine, away.id, "appointment_removed"))


# -- finding 9: a ClientId already held by another organisation's patient ----------------------


@pytest.mark.parametrize("plan", ("organization", "patient"))
def test_a_client_id_held_by_another_patient_is_a_warning_never_a_crash(
    plan: str, service: SyncService, sim: SimulatorServer, pq: App
) -> None:
    rosa = next(c for c in sim.dataset.fsh_patients if c.first_name == "Rosa")
    assert service.sync_organization(ORG).status == "success"
    # The same person lives in a second house under another email; IntakeQ's profile
    # (still Rosa's ClientId) now carries that email.
    with Session(pq.engine) as session:
        other = Organization(slug="second-house", name="Second House")
        twin = Patient(
            first_name="Rosa", last_name="Delgado", email="rosa.d@second.example",
            date_of_birth=rosa.date_of_birth,
        )  # fmt: skip
        session.add_all([other, twin])
        session.flush()
        session.add(Affiliation(patient_id=twin.id, organization_id=other.id))
        session.commit()
        twin_id = twin.id
    control(sim, "POST", f"/clients/{rosa.client_id}/email", Email="rosa.d@second.example")

    if plan == "organization":
        result = service.sync_organization("second-house")
    else:
        result = service.sync_patient("rosa.d@second.example")

    assert result.status == "partial"
    assert any("already another patient's" in w for w in result.warnings)
    assert patient_by_email(pq.engine, "rosa.d@second.example").intakeq_client_id is None
    assert live(pq.engine, twin_id) == {}
    first = patient_by_email(pq.engine, rosa.email)
    assert first.intakeq_client_id == rosa.client_id
    assert shown(sim, pq.engine, first.id) == truth(sim, rosa.client_id)


# -- finding 4: the practice's size ----------------------------------------------------------


def busier(sim: SimulatorServer) -> None:
    """1,300 more appointments of a client who is not ours: more than 12 pages in the window."""
    ds = sim.dataset
    stranger = next(c for c in ds.clients if c.organization is None)
    for n in range(1300):
        start = datetime.combine(ds.today, time(8), DENVER) + timedelta(days=n % 170 - 85)
        book_at(sim, stranger.client_id, start)


def assert_everything_stored(sim: SimulatorServer, pq: App) -> None:
    fsh = {c.client_id for c in sim.dataset.fsh_patients}
    start, end = sim.dataset.default_window()
    wanted = {a.id for a in sim.dataset.appointments_in_window(start, end, fsh)}
    assert set(live(pq.engine)) == wanted


def test_a_sync_over_an_empty_range_does_not_shrink_later_full_fetches(
    service: SyncService, sim: SimulatorServer, pq: App
) -> None:
    busier(sim)
    far = sim.dataset.today + timedelta(days=300)
    empty = service.sync_organization(ORG, window=Window(far, far + timedelta(days=1)))
    assert empty.status == "success" and empty.summary.new == 0

    result = service.sync_nightly()

    assert result.status == "success", result.error
    assert_everything_stored(sim, pq)


def test_a_remembered_size_never_bounds_a_fetch_below_what_its_first_page_implies(
    service: SyncService, sim: SimulatorServer, pq: App, clock: ManualClock
) -> None:
    busier(sim)
    with Session(pq.engine) as session:
        # What a much quieter month taught (or a stale figure): about one appointment a day.
        session.add(SyncState(name=PRACTICE_DENSITY, value={"per_day": 1.0}, updated_at=clock()))
        session.commit()

    result = service.sync_nightly()

    assert result.plan == "window"
    assert result.status == "success", result.error
    assert_everything_stored(sim, pq)


# -- finding 11: no takeover between the lease check and the commit --------------------------


def test_a_scope_cannot_be_taken_over_between_a_runs_lease_check_and_its_commit(
    pq: App, clock: ManualClock
) -> None:
    locks = SyncLocks(pq.engine, clock, lease=timedelta(seconds=30))
    first, second = uuid.uuid4(), uuid.uuid4()
    locks.acquire("organization:test", first)
    events: list[str] = []
    with Session(pq.engine) as session:
        begin_write(session)  # a run's page transaction
        assert SyncLocks.holds(session.connection(), "organization:test", first)
        clock.advance(timedelta(minutes=1))  # the lease lapses while the page is written

        def take_over() -> None:
            locks.acquire("organization:test", second)
            events.append("taken over")

        worker = threading.Thread(target=take_over)
        worker.start()
        worker.join(timeout=1)
        events.append("page committed")
        session.commit()
    worker.join()
    # The takeover waited for the page's transaction; the page did not land after it.
    assert events == ["page committed", "taken over"]


# -- finding 12: the per-patient deletion scan reads the patient's rows only -----------------


def test_a_patient_runs_deletion_scan_asks_the_database_for_that_patient_only(
    service: SyncService, sim: SimulatorServer, pq: App
) -> None:
    assert service.sync_organization(ORG).status == "success"
    austin = sim.dataset.special.plus_address
    patient = patient_by_email(pq.engine, austin.email)
    statements: list[tuple[str, Any]] = []

    def seen(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        statements.append((statement, parameters))

    event.listen(pq.engine, "before_cursor_execute", seen)
    try:
        assert service.sync_patient(austin.email).status == "success"
    finally:
        event.remove(pq.engine, "before_cursor_execute", seen)
    scans = [
        (sql, params)
        for sql, params in statements
        if sql.lstrip().startswith("SELECT appointments.pq_appointment_id, appointments.patient_id")
    ]
    assert len(scans) == 1
    sql, params = scans[0]
    assert "appointments.patient_id IN" in sql
    assert patient.id.hex in str(params) or str(patient.id) in str(params)


# -- IntakeQ changing between the pages of a fetch ---------------------------------------------


def test_a_fetch_that_intakeq_changed_between_its_pages_is_partial_until_a_quiet_run(
    hooked: SyncService, sim: SimulatorServer, pq: App, hooks: PageHooks
) -> None:
    """Offset paging: an appointment deleted from page 1 while we read moves the first of
    page 2 onto page 1, which we have read already. The run never sees it; it must not say
    `success`, and the next run (IntakeQ quiet) stores it."""
    start, end = sim.dataset.default_window()
    listed = sim.dataset.appointments_in_window(start, end)  # IntakeQ's order, latest first
    assert len(listed) > 200, "the window must span several pages"
    deleted, skipped = listed[50].id, listed[100].id
    austin = sim.dataset.special.plus_address
    # The skipped one is our patient's, so what we show depends on it.
    control(sim, "POST", f"/appointments/{skipped}/client", ClientId=austin.client_id)
    hooks.after_page["1"] = lambda: sim.app.store.delete(deleted)

    result = hooked.sync_organization(ORG)

    assert not hooks.after_page, "IntakeQ changed between the first and the second page"
    assert skipped not in live(pq.engine), "the precondition: the shift hid it from the run"
    assert result.status == "partial", (result.status, result.incomplete)
    assert any("PracticeQ changed while we were reading it" in r for r in result.incomplete)
    patient = patient_by_email(pq.engine, austin.directory_email or austin.email)
    assert last_synced(pq.engine, patient.id) is None  # not stamped "synced"

    again = hooked.sync_organization(ORG)

    assert again.status == "success", (again.incomplete, again.warnings)
    assert skipped in live(pq.engine)
    assert_everything_stored(sim, pq)


def test_a_booking_landing_on_the_pages_already_read_is_caught(
    hooked: SyncService, sim: SimulatorServer, pq: App, hooks: PageHooks
) -> None:
    """A booking at the top of the list while we read page 2 onwards: we never read it."""
    austin = sim.dataset.special.plus_address
    booked: list[str] = []
    hooks.after_page["1"] = lambda: booked.append(book(sim, austin.client_id, 89))

    result = hooked.sync_organization(ORG)

    assert booked and booked[0] not in live(pq.engine)
    assert result.status == "partial", result.incomplete
    assert hooked.sync_organization(ORG).status == "success"
    assert booked[0] in live(pq.engine)


def test_a_quiet_sync_all_stays_inside_its_promise_with_the_check(
    service: SyncService, sim: SimulatorServer, pq: App
) -> None:
    """The check's requests are in what Sync all promises: a quiet run spends no more."""
    first = service.sync_organization(ORG)  # learns the practice's size
    assert first.status == "success", first.incomplete
    promised = sync_all_promise(service, pq)

    result = service.sync_organization(ORG)

    assert result.plan == "window" and result.status == "success"
    assert result.requests_made <= promised


def test_a_patient_whose_own_listing_intakeq_changed_between_its_pages_is_partial(
    hooked: SyncService, sim: SimulatorServer, pq: App, hooks: PageHooks, clock: ManualClock
) -> None:
    """A patient's own query (`client=`) pages too once they hold more than 100 appointments
    in the window: a deletion from its first page while we read the second hides the one
    that moves up. The patient's sync must not say `success` (nor stamp them synced); the
    next one, IntakeQ quiet, stores it."""
    ds = sim.dataset
    austin = ds.special.plus_address
    email = austin.directory_email or austin.email
    for n in range(120):
        book(sim, austin.client_id, -85 + n % 170)
    assert hooked.sync_patient(email).status == "success"
    patient = patient_by_email(pq.engine, email)
    stamped = last_synced(pq.engine, patient.id)
    assert stamped is not None
    start, end = ds.default_window()
    listed = ds.appointments_in_window(start, end, {austin.client_id})  # latest first
    assert len(listed) > 101, "the patient's listing must span two pages"
    # A booking that IntakeQ lists 101st, just after the 100th: the deletion of one on the
    # first page moves it up onto the page already read.
    late = listed[99].start - timedelta(minutes=1)
    assert listed[100].start < late, "nothing else starts between the two"
    new = book_at(sim, austin.client_id, late)
    deleted = listed[50].id
    hooks.after_client_page["1"] = lambda: sim.app.store.delete(deleted)
    clock.advance(timedelta(minutes=2))  # past the cached answer of the first sync

    result = hooked.sync_patient(email)

    assert not hooks.after_client_page, "IntakeQ changed between the first and second page"
    assert new not in shown(sim, pq.engine, patient.id), "the precondition: the shift hid it"
    assert result.status == "partial", (result.status, result.incomplete, result.warnings)
    assert any(
        "PracticeQ changed while we were reading it" in reason
        for p in result.patients
        for reason in p.incomplete
    ), result.patients
    assert last_synced(pq.engine, patient.id) == stamped  # not stamped "synced" again

    clock.advance(timedelta(minutes=2))
    again = hooked.sync_patient(email)

    assert again.status == "success", (again.incomplete, again.warnings)
    assert shown(sim, pq.engine, patient.id) == truth(sim, austin.client_id)
    assert new in shown(sim, pq.engine, patient.id)
    assert (last_synced(pq.engine, patient.id) or stamped) > stamped


@pytest.mark.parametrize("plan", ["organization", "patient"])
def test_an_edit_between_pages_that_leaves_last_modified_alone_is_caught(
    plan: str, hooked: SyncService, sim: SimulatorServer, pq: App, hooks: PageHooks
) -> None:
    """`LastModified` is only reported: IntakeQ may leave it out or unchanged. A booking on
    the page already read, moved a day earlier between the pages in the instant it was made
    (the simulator's clock stands still, so its LastModified stays the same), must still
    make the run `partial`: a version is every field, not LastModified alone."""
    ds = sim.dataset
    austin = ds.special.plus_address
    email = austin.directory_email or austin.email
    if plan == "patient":  # a programme: the patient's own listing takes two pages
        for n in range(120):
            book(sim, austin.client_id, -85 + n % 170)
    latest = datetime.combine(ds.today + timedelta(days=85), time(10), DENVER)
    target = book_at(sim, austin.client_id, latest)  # near the top of the first page
    before = ds.appointments[target].modified_ms
    moved = latest - timedelta(days=1)
    armed = hooks.after_client_page if plan == "patient" else hooks.after_page
    armed["1"] = lambda: sim.app.store.update(target, AppointmentChanges(start=moved))

    result = hooked.sync_patient(email) if plan == "patient" else hooked.sync_organization(ORG)

    assert not armed, "IntakeQ changed between the first and second page"
    assert ds.appointments[target].modified_ms == before, "the precondition: same LastModified"
    assert live(pq.engine)[target].start_time != moved, "the precondition: read before the move"
    assert result.status == "partial", (result.status, result.incomplete, result.warnings)


def test_a_deletion_landing_while_an_incremental_nightly_reads_makes_it_partial(
    hooked: SyncService, sim: SimulatorServer, pq: App, hooks: PageHooks, clock: ManualClock
) -> None:
    """The incremental night reads IntakeQ's deleted list first, then what changed (pages of
    it): a deletion between those pages is in neither, so the night may not say `success`."""
    assert hooked.sync_nightly().status == "success"  # the first night: a reconcile
    busier(sim)  # a busy day: the next night's list of changes takes several pages
    clock.advance(timedelta(days=1))
    target = sorted(live(pq.engine))[0]
    hooks.after_page["1"] = lambda: sim.app.store.delete(target)

    night = hooked.sync_nightly()

    assert night.plan is not None and night.plan.startswith("incremental")
    assert not hooks.after_page, "IntakeQ changed between two pages of the night's reads"
    assert target in live(pq.engine), "the precondition: the night did not see the deletion"
    assert night.status == "partial", (night.status, night.warnings)
    assert any("PracticeQ changed while we were reading it" in r for r in night.incomplete)

    clock.advance(timedelta(days=1))
    assert hooked.sync_nightly().status == "success"
    assert target not in live(pq.engine)
