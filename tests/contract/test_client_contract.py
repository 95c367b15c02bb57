"""Contract: the real IntakeQClient against a real simulator on loopback, endpoint by endpoint.

Every answer is checked against the simulator's ground truth (its data set), so a client
that builds a query wrongly, stops paging early or misreads a field fails here.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from intakeq_sim import (
    STATUSES,
    ManualClock,
    SimAppointment,
    SimConfig,
    SimulatorServer,
)
from pqsync.domain.times import to_epoch_ms
from pqsync.intakeq.budget import DatabaseBudget, MemoryBudget
from pqsync.intakeq.client import IntakeQClient
from pqsync.intakeq.errors import IntakeQAuthError
from pqsync.intakeq.models import METADATA_FIELDS, Appointment, AppointmentQuery
from pqsync.settings import SIMULATOR_API_KEY

NOW = datetime(2025, 10, 24, 16, 0, tzinfo=UTC)  # 10:00 in Denver; the window spans a DST change
TODAY = date(2025, 10, 24)
PAGE = 100


class RecordingLogger:
    """Keeps every event the client logs, to check what would reach the log."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def _keep(self, event: str, **kw: Any) -> None:
        self.events.append((event, kw))

    debug = info = warning = error = _keep


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
def sim(clock: ManualClock) -> Iterator[SimulatorServer]:
    config = SimConfig(minute_limit=None, daily_limit=None)
    with SimulatorServer(today=TODAY, clock=clock, config=config) as server:
        yield server


@pytest.fixture
def log() -> RecordingLogger:
    return RecordingLogger()


def make_client(
    sim: SimulatorServer, log: RecordingLogger | None = None, key: str = SIMULATOR_API_KEY
) -> IntakeQClient:
    budget = MemoryBudget(minute_limit=10_000, daily_limit=10_000)
    return IntakeQClient(sim.base_url, key, budget=budget, timeout=10, logger=log)


@pytest.fixture
def client(sim: SimulatorServer, log: RecordingLogger) -> Iterator[IntakeQClient]:
    with make_client(sim, log) as client:
        yield client


@pytest.fixture
def window(sim: SimulatorServer) -> tuple[date, date]:
    return sim.dataset.default_window()


def fetch_pages(client: IntakeQClient, query: AppointmentQuery) -> list[list[Appointment]]:
    pages: list[list[Appointment]] = []
    for page in client.appointment_pages(query):
        assert all(isinstance(record, Appointment) for record in page)
        pages.append([record for record in page if isinstance(record, Appointment)])
    return pages


def fetch(client: IntakeQClient, query: AppointmentQuery) -> list[Appointment]:
    return [record for page in fetch_pages(client, query) for record in page]


def ids(records: list[Appointment] | list[SimAppointment]) -> list[str]:
    return [record.id for record in records]


def control(sim: SimulatorServer, method: str, path: str, **body: Any) -> dict[str, Any]:
    response = httpx.request(method, f"{sim.control_url}{path}", json=body or None)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def api_requests(sim: SimulatorServer) -> int:
    requests: int = sim.stats()["requests"]
    return requests


# --- GET /appointments: filters ----------------------------------------------------------------


def test_the_client_filter_is_partial_and_returns_the_superstring_clients(
    client: IntakeQClient, sim: SimulatorServer, window: tuple[date, date]
) -> None:
    special = sim.dataset.special
    ann, joann, impostor = special.email_substring, special.email_superstring, special.impostor
    start, end = window
    records = fetch(client, AppointmentQuery(client=ann.email, start_date=start, end_date=end))
    matching = {ann.client_id, joann.client_id, impostor.client_id}
    assert {r.client_id for r in records} == matching
    assert ids(records) == ids(sim.dataset.appointments_in_window(start, end, matching))


def test_the_client_filter_matches_names_too(
    client: IntakeQClient, sim: SimulatorServer, window: tuple[date, date]
) -> None:
    heavy = sim.dataset.special.heavy
    start, end = window
    records = fetch(client, AppointmentQuery(client=heavy.name, start_date=start, end_date=end))
    assert ids(records) == ids(sim.dataset.appointments_in_window(start, end, {heavy.client_id}))


def test_the_date_filter_takes_denver_local_dates_and_keeps_evening_appointments(
    client: IntakeQClient, sim: SimulatorServer
) -> None:
    ds = sim.dataset
    ann = ds.special.email_substring
    day = TODAY + timedelta(days=3)
    evening = [
        a
        for a in ds.appointments.values()
        if a.client_id == ann.client_id and a.start.astimezone(ds.zone).date() == day
    ]
    assert len(evening) == 1
    assert evening[0].start.astimezone(UTC).date() == day + timedelta(days=1)  # tomorrow in UTC

    special = ds.special
    matching = {ann.client_id, special.email_superstring.client_id, special.impostor.client_id}
    on_day = fetch(client, AppointmentQuery(client=ann.email, start_date=day, end_date=day))
    assert evening[0].id in ids(on_day)
    assert ids(on_day) == ids(ds.appointments_in_window(day, day, matching))
    after = day + timedelta(days=1)
    on_next = fetch(client, AppointmentQuery(client=ann.email, start_date=after, end_date=after))
    assert evening[0].id not in ids(on_next)
    assert ids(on_next) == ids(ds.appointments_in_window(after, after, matching))


def test_the_whole_window_is_exactly_the_ground_truth_across_the_dst_change(
    client: IntakeQClient, sim: SimulatorServer, window: tuple[date, date]
) -> None:
    start, end = window
    records = fetch(client, AppointmentQuery(start_date=start, end_date=end))
    truth = sim.dataset.appointments_in_window(start, end)
    assert len(truth) > 4 * PAGE
    assert ids(records) == ids(truth)
    # The window edges are local dates: in by local date though out by UTC date, and the reverse.
    zone = sim.dataset.zone
    local_days = {r.start.astimezone(zone).date() for r in records}
    assert min(local_days) == start
    assert max(local_days) == end
    assert any(r.start.astimezone(UTC).date() > end for r in records)
    before_start = [
        a
        for a in sim.dataset.appointments.values()
        if a.start.astimezone(UTC).date() == start and a.start.astimezone(zone).date() < start
    ]
    assert before_start
    assert not {a.id for a in before_start} & set(ids(records))


@pytest.mark.parametrize("status", STATUSES)
def test_the_status_filter(
    client: IntakeQClient, sim: SimulatorServer, window: tuple[date, date], status: str
) -> None:
    start, end = window
    records = fetch(client, AppointmentQuery(status=status, start_date=start, end_date=end))
    truth = [a for a in sim.dataset.appointments_in_window(start, end) if a.status == status]
    assert truth
    assert ids(records) == ids(truth)
    assert {r.status for r in records} == {status}


def test_the_practitioner_email_filter(
    client: IntakeQClient, sim: SimulatorServer, window: tuple[date, date]
) -> None:
    okafor = sim.dataset.practitioners[1]
    start, end = window
    query = AppointmentQuery(practitioner_email=okafor.email, start_date=start, end_date=end)
    records = fetch(client, query)
    truth = [
        a for a in sim.dataset.appointments_in_window(start, end) if a.practitioner_id == okafor.id
    ]
    assert truth
    assert ids(records) == ids(truth)
    assert {r.practitioner_email for r in records} == {okafor.email}


def test_updated_since_lists_only_what_changed_after_that_day(
    client: IntakeQClient, sim: SimulatorServer, clock: ManualClock, window: tuple[date, date]
) -> None:
    start, end = window
    target = sim.dataset.appointments_in_window(start, end)[0]
    changed_at = clock.advance(timedelta(days=3))
    control(sim, "PATCH", f"/appointments/{target.id}", Status="Missed")
    changed_day = changed_at.astimezone(sim.dataset.zone).date()

    records = fetch(client, AppointmentQuery(updated_since=changed_day))
    assert ids(records) == [target.id]
    assert records[0].status == "Missed"
    assert records[0].last_modified == changed_at
    earlier = fetch(client, AppointmentQuery(updated_since=changed_day - timedelta(days=10)))
    assert target.id in ids(earlier)
    assert len(earlier) > 1
    assert fetch(client, AppointmentQuery(updated_since=changed_day + timedelta(days=1))) == []


def test_deleted_only_lists_recent_deletions_and_get_then_answers_none(
    client: IntakeQClient, sim: SimulatorServer, clock: ManualClock, window: tuple[date, date]
) -> None:
    ds = sim.dataset
    recent_ms = to_epoch_ms(clock.now - timedelta(days=10))
    already = {a.id for a in ds.appointments.values() if a.deleted_ms and a.deleted_ms >= recent_ms}
    assert already
    assert set(ids(fetch(client, AppointmentQuery(deleted_only=True)))) == already

    start, end = window
    target = ds.appointments_in_window(start, end)[5]
    assert client.get_appointment(target.id) is not None
    control(sim, "POST", f"/appointments/{target.id}/delete")
    assert set(ids(fetch(client, AppointmentQuery(deleted_only=True)))) == already | {target.id}
    assert client.get_appointment(target.id) is None
    listed = fetch(client, AppointmentQuery(start_date=start, end_date=end))
    assert target.id not in ids(listed)


# --- GET /appointments: paging and order --------------------------------------------------------


def test_the_heavy_patient_is_paged_past_100(
    client: IntakeQClient, sim: SimulatorServer, window: tuple[date, date]
) -> None:
    heavy = sim.dataset.special.heavy
    start, end = window
    query = AppointmentQuery(client=heavy.email, start_date=start, end_date=end)
    pages = fetch_pages(client, query)
    truth = sim.dataset.appointments_in_window(start, end, {heavy.client_id})
    assert heavy.client_id == 5502
    assert len(truth) == 129
    assert [len(p) for p in pages] == [PAGE, 29]
    assert ids([r for p in pages for r in p]) == ids(truth)
    assert client.requests_sent == api_requests(sim) == 2


def test_pages_are_ordered_by_start_descending_across_page_boundaries(
    client: IntakeQClient, sim: SimulatorServer, window: tuple[date, date]
) -> None:
    start, end = window
    pages = fetch_pages(client, AppointmentQuery(start_date=start, end_date=end))
    assert len(pages) >= 3
    assert all(len(p) == PAGE for p in pages[:-1])
    assert 0 < len(pages[-1]) < PAGE
    starts = [r.start for p in pages for r in p]
    assert starts == sorted(starts, reverse=True)
    for earlier, later in itertools.pairwise(pages):
        assert earlier[-1].start >= later[0].start


def test_a_full_last_page_is_followed_by_an_empty_one_and_paging_stops(
    client: IntakeQClient, sim: SimulatorServer, window: tuple[date, date]
) -> None:
    heavy = sim.dataset.special.heavy
    start, end = window
    truth = sim.dataset.appointments_in_window(start, end, {heavy.client_id})
    # Delete the heavy patient's 29 oldest appointments in the window: exactly 100 remain.
    for appointment in truth[PAGE:]:
        control(sim, "POST", f"/appointments/{appointment.id}/delete")
    query = AppointmentQuery(client=heavy.email, start_date=start, end_date=end)
    pages = fetch_pages(client, query)
    assert [len(p) for p in pages] == [PAGE]
    assert ids(pages[0]) == ids(truth[:PAGE])
    assert client.requests_sent == 2  # the empty page 2 told the client it was done


# --- parsed fields --------------------------------------------------------------------------------


def test_parsed_fields_equal_the_simulators_ground_truth(
    client: IntakeQClient, sim: SimulatorServer, window: tuple[date, date]
) -> None:
    ds = sim.dataset
    start, end = window
    records = fetch(client, AppointmentQuery(start_date=start, end_date=end))
    assert records
    for record in records:
        truth = ds.appointments[record.id]
        client_record = ds.clients_by_id[truth.client_id]
        practitioner = ds.practitioners_by_id[truth.practitioner_id]
        service = ds.services_by_id[truth.service_id]
        assert record.start.tzinfo is not None
        assert record.start.utcoffset() == timedelta(0)
        assert record.start == truth.start
        assert record.end == truth.start + timedelta(minutes=truth.duration)
        assert record.last_modified == datetime.fromtimestamp(truth.modified_ms / 1000, UTC)
        assert record.client_id == truth.client_id
        assert record.client_name == client_record.name
        assert record.client_email == client_record.email.lower()
        assert record.practitioner_id == practitioner.id
        assert record.practitioner_name == practitioner.complete_name
        assert record.practitioner_email == practitioner.email
        assert record.service_id == service.id
        assert record.service_name == service.name
        assert record.status == truth.status
        assert record.location_name == ds.locations_by_id[truth.location_id].name
        # Only the allow-listed fields travel on as metadata: never the client's phone or
        # birth date, never the telehealth start URL.
        assert record.metadata.keys() <= METADATA_FIELDS
        assert "ClientPhone" not in record.metadata
        assert "ClientDateOfBirth" not in record.metadata
        assert "TelehealthInfo" not in record.metadata


# --- other endpoints ------------------------------------------------------------------------------


def test_get_appointment_reads_one_and_none_for_an_unknown_id(
    client: IntakeQClient, sim: SimulatorServer, window: tuple[date, date]
) -> None:
    start, end = window
    truth = sim.dataset.appointments_in_window(start, end)[10]
    record = client.get_appointment(truth.id)
    assert record is not None
    assert (record.id, record.start, record.client_id) == (truth.id, truth.start, truth.client_id)
    assert client.get_appointment("00000000-0000-0000-0000-000000000000") is None


def test_practice_settings_match_the_practice(client: IntakeQClient, sim: SimulatorServer) -> None:
    ds = sim.dataset
    settings = client.practice_settings()
    assert {(p.id, p.name, p.email) for p in settings.practitioners} == {
        (p.id, p.complete_name, p.email) for p in ds.practitioners
    }
    assert {s["Id"] for s in settings.services} == {s.id for s in ds.services}
    assert {loc["Id"] for loc in settings.locations} == {loc.id for loc in ds.locations}


def test_create_update_and_cancel_then_read_back(
    client: IntakeQClient, sim: SimulatorServer, clock: ManualClock
) -> None:
    ds = sim.dataset
    patient = ds.special.plus_address
    practitioner, service, location = ds.practitioners[2], ds.services[1], ds.locations[0]
    starts_at = datetime(2025, 11, 3, 18, 30, tzinfo=ds.zone).astimezone(UTC)  # evening, Denver

    created = client.create_appointment(
        PractitionerId=practitioner.id,
        ClientId=patient.client_id,
        ServiceId=service.id,
        LocationId=location.id,
        Status="WaitingConfirmation",
        UtcDateTime=to_epoch_ms(starts_at),
        SendClientEmailNotification=False,
        ReminderType="None",
    )
    assert created.id in ds.appointments
    assert (created.client_id, created.start, created.status) == (
        patient.client_id,
        starts_at,
        "WaitingConfirmation",
    )
    assert client.get_appointment(created.id) == created
    day = starts_at.astimezone(ds.zone).date()
    listed = fetch(client, AppointmentQuery(client=patient.email, start_date=day, end_date=day))
    assert created.id in ids(listed)

    moved = starts_at + timedelta(days=1, hours=-1)
    updated = client.update_appointment(
        created.id, Status="Confirmed", UtcDateTime=to_epoch_ms(moved)
    )
    assert (updated.id, updated.status, updated.start) == (created.id, "Confirmed", moved)
    assert client.get_appointment(created.id) == updated
    assert ds.appointments[created.id].start == moved

    client.cancel_appointment(created.id, "Scheduling conflict")
    cancelled = client.get_appointment(created.id)
    assert cancelled is not None
    assert cancelled.status == "Canceled"
    assert ds.appointments[created.id].cancellation_reason == "Scheduling conflict"
    assert "FullCancellationReason" not in cancelled.metadata  # not ours to keep
    listed = fetch(client, AppointmentQuery(status="Canceled", start_date=day, end_date=day))
    assert created.id not in ids(listed)  # it moved to the next day
    next_day = day + timedelta(days=1)
    listed = fetch(
        client, AppointmentQuery(status="Canceled", start_date=next_day, end_date=next_day)
    )
    assert created.id in ids(listed)


def test_clients_search_is_partial_and_follows_pages(clock: ManualClock) -> None:
    config = SimConfig(minute_limit=None, daily_limit=None)
    big = SimulatorServer(today=TODAY, clock=clock, config=config, patients=150, appointments=0)
    with big, make_client(big) as client:
        ds = big.dataset
        found = list(client.clients("FirstStepHouse.org"))
        expected = sorted(
            c.client_id for c in ds.clients if "firststephouse.org" in c.email.lower()
        )
        assert len(expected) > PAGE
        assert [c.client_id for c in found] == expected
        assert client.requests_sent == 2
        by_id = ds.clients_by_id
        assert all(c.email == by_id[c.client_id].email.lower() for c in found)
        assert all(c.name == by_id[c.client_id].name for c in found)

        special = ds.special
        ann = {c.client_id for c in client.clients(special.email_substring.email)}
        assert ann == {
            special.email_substring.client_id,
            special.email_superstring.client_id,
            special.impostor.client_id,
        }
        assert len(list(client.clients())) == len(ds.clients)


# --- auth and what reaches the log ----------------------------------------------------------------


def test_a_wrong_key_is_an_auth_error_that_never_shows_the_key(sim: SimulatorServer) -> None:
    wrong_key = "wrong-key-5f3a9c"
    log = RecordingLogger()
    with make_client(sim, log, key=wrong_key) as client:
        with pytest.raises(IntakeQAuthError) as raised:
            fetch(client, AppointmentQuery(client="ann@firststephouse.org"))
        assert client.requests_sent == 1  # refused at once, no retries
    assert wrong_key not in str(raised.value)
    assert SIMULATOR_API_KEY not in str(raised.value)
    assert sim.stats()["by_status"] == {"401": 1}
    assert log.events
    assert wrong_key not in repr(log.events)


def test_the_log_holds_neither_the_key_nor_the_patients_email(
    client: IntakeQClient, log: RecordingLogger, sim: SimulatorServer, window: tuple[date, date]
) -> None:
    heavy = sim.dataset.special.heavy
    start, end = window
    fetch(client, AppointmentQuery(client=heavy.email, start_date=start, end_date=end))
    assert len(log.events) == 2
    logged = repr(log.events)
    assert SIMULATOR_API_KEY not in logged
    assert heavy.email not in logged
    assert heavy.email.replace("@", "%40") not in logged
    assert start.isoformat() in logged  # the safe parameters are kept


def test_the_shared_database_budget_counts_every_request_the_practice_received(
    sim: SimulatorServer, engine: Engine, window: tuple[date, date]
) -> None:
    budget = DatabaseBudget(engine, SIMULATOR_API_KEY, minute_limit=1_000, daily_limit=1_000)
    start, end = window
    with IntakeQClient(sim.base_url, SIMULATOR_API_KEY, budget=budget, timeout=10) as client:
        records = fetch(client, AppointmentQuery(start_date=start, end_date=end))
        client.practice_settings()
        assert records
        assert budget.usage().day_used == client.requests_sent == api_requests(sim) == 6
