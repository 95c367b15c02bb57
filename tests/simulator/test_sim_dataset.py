"""The simulator's data set: deterministic, with the special cases a sync must survive."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from intakeq_sim import STATUSES, Dataset, build_dataset, demo_directory
from pqsync.intakeq.models import parse_appointment

TODAY = date(2025, 10, 24)
DENVER = ZoneInfo("America/Denver")
API_FIELDS = {
    "Id", "ClientId", "ClientName", "ClientEmail", "ClientPhone", "ClientDateOfBirth",
    "PractitionerId", "PractitionerName", "PractitionerEmail", "ServiceId", "ServiceName",
    "LocationId", "LocationName", "Status", "StartDate", "EndDate", "DateCreated",
    "StartDateIso", "EndDateIso", "StartDateLocal", "EndDateLocal", "StartDateLocalFormatted",
    "Duration", "Price", "BookedByClient", "CreatedBy", "IntakeId", "TelehealthInfo",
    "LastModified", "CustomFields", "CancellationDate", "FullCancellationReason",
}  # fmt: skip


@pytest.fixture(scope="module")
def ds() -> Dataset:
    return build_dataset(1, TODAY)


def _dump(dataset: Dataset) -> str:
    records = [dataset.render(a) | {"deleted": a.deleted_ms} for a in dataset.appointments.values()]
    return json.dumps([records, demo_directory(dataset)], sort_keys=True)


def _in_window(dataset: Dataset, client_id: int) -> int:
    start, end = dataset.default_window()
    return len(dataset.appointments_in_window(start, end, {client_id}))


def test_same_seed_and_day_give_identical_data() -> None:
    assert _dump(build_dataset(7, TODAY)) == _dump(build_dataset(7, TODAY))
    scaled = [build_dataset(7, TODAY, appointments=3000, patients=30) for _ in range(2)]
    assert _dump(scaled[0]) == _dump(scaled[1])


def test_another_seed_gives_other_appointments() -> None:
    assert set(build_dataset(1, TODAY).appointments) != set(build_dataset(2, TODAY).appointments)


def test_today_defaults_to_the_practice_date() -> None:
    denver_today = datetime.now(DENVER).date()
    # Either side too, in case the test runs across midnight in Denver.
    assert build_dataset(1).today in {denver_today + timedelta(days=d) for d in (-1, 0, 1)}


def test_every_appointment_has_every_documented_field_and_parses(ds: Dataset) -> None:
    for appointment in ds.appointments.values():
        record = ds.render(appointment)
        assert set(record) >= API_FIELDS
        parsed = parse_appointment(record)
        assert parsed.start == appointment.start
        assert record["StartDateIso"].endswith("0000000Z")


def test_heavy_patient_has_more_than_one_page_in_the_window(ds: Dataset) -> None:
    assert _in_window(ds, ds.special.heavy.client_id) > 100


def test_special_emails(ds: Dataset) -> None:
    special = ds.special
    assert special.plus_address.email == "casemanager+austin@firststephouse.org"
    assert special.email_substring.email in special.email_superstring.email
    assert special.email_substring.email in special.impostor.email
    mismatch = special.case_mismatch
    assert mismatch.directory_email is not None
    assert mismatch.email != mismatch.directory_email
    assert mismatch.email.lower() == mismatch.directory_email.lower()
    assert special.impostor.organization is None
    assert _in_window(ds, special.impostor.client_id) > 0
    emails = [c.email.lower() for c in ds.clients]
    assert len(emails) == len(set(emails))


def test_unmapped_practitioner_holds_patient_appointments_in_the_window(ds: Dataset) -> None:
    start, end = ds.default_window()
    patients = {c.client_id for c in ds.fsh_patients}
    unmapped = ds.special.unmapped_practitioner.id
    assert any(
        a.practitioner_id == unmapped for a in ds.appointments_in_window(start, end, patients)
    )
    assert len(ds.mapped_practitioners) >= 4
    assert len(ds.services) >= 3
    assert len(ds.locations) >= 2


def test_window_holds_every_status_and_evenings_that_are_tomorrow_in_utc(ds: Dataset) -> None:
    start, end = ds.default_window()
    window = ds.appointments_in_window(start, end)
    assert {a.status for a in window} == set(STATUSES)
    assert any(a.start.astimezone(DENVER).date() != a.start.date() for a in window)


def test_some_appointments_lie_outside_the_window_on_both_sides(ds: Dataset) -> None:
    start, end = ds.default_window()
    days = [a.start.astimezone(DENVER).date() for a in ds.appointments.values()]
    assert any(d < start for d in days)
    assert any(d > end for d in days)


def test_window_edges_differ_between_local_and_utc_dates(ds: Dataset) -> None:
    start, end = ds.default_window()
    starts = [a.start for a in ds.appointments.values()]
    # Inside by local date, outside by UTC date; and the reverse just before the window.
    assert any(s.astimezone(DENVER).date() == end and s.date() > end for s in starts)
    assert any(s.astimezone(DENVER).date() < start and s.date() == start for s in starts)


def test_same_local_hour_on_both_sides_of_the_dst_change(ds: Dataset) -> None:
    mismatch = ds.special.case_mismatch.client_id
    utc_hours = {
        a.start.astimezone(UTC).hour
        for a in ds.appointments.values()
        if a.client_id == mismatch and a.start.astimezone(DENVER).time() == time(10)
    }
    assert utc_hours == {16, 17}  # 10:00 MDT and 10:00 MST


def test_some_appointments_are_deleted(ds: Dataset) -> None:
    deleted = [a for a in ds.appointments.values() if a.deleted_ms is not None]
    assert len(deleted) == 4


def test_scale_knobs() -> None:
    big = build_dataset(3, TODAY, appointments=100_000)
    assert len(big.appointments) == 100_000
    many = build_dataset(3, TODAY, patients=450)
    assert len(many.fsh_patients) == 450
    emails = [c.email for c in many.clients]
    assert len(set(emails)) == len(emails)
    assert build_dataset(3, TODAY, appointments=5).appointments.keys()


def test_too_few_patients_for_the_special_cases_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 5"):
        build_dataset(1, TODAY, patients=4)


def test_directory_matches_the_dataset(ds: Dataset) -> None:
    directory = json.loads(json.dumps(demo_directory(ds)))
    special = ds.special
    patients = {p["email"]: p for p in directory["patients"]}
    assert set(patients) == {c.directory_email for c in ds.fsh_patients}
    assert special.impostor.email not in patients
    assert special.case_mismatch.email not in patients  # ours is in another case
    assert {p["intakeq_practitioner_id"] for p in directory["providers"]} == {
        p.id for p in ds.mapped_practitioners
    }
    assert special.unmapped_practitioner.id not in json.dumps(directory)
    assert {s["intakeq_service_id"] for s in directory["services"]} == {s.id for s in ds.services}
    known = {p["intakeq_client_id"] for p in patients.values() if "intakeq_client_id" in p}
    assert known == set(special.known_client_ids)
    assert 1 <= len(known) <= 2
    assert directory["organizations"] == [
        {"slug": "first-step-house", "name": "First Step House", "timezone": "America/Denver"}
    ]


def test_directory_consent_and_users(ds: Dataset) -> None:
    directory = demo_directory(ds)
    consents = [a.get("roi_consent") for a in directory["affiliations"]]
    assert len(consents) == len(ds.fsh_patients)
    assert consents.count(None) == 1
    assert [c["status"] for c in consents if c].count("expired") == 1
    users = {u["email"]: u for u in directory["partner_users"]}
    assert users["beth@firststephouse.org"]["role"] == "partner_admin"
    assert users["ops@clinic.example"]["role"] == "staff_admin"
    assert {u["role"] for u in users.values()} >= {"case_manager", "viewer"}
    assert all(u["password"] for u in users.values())
