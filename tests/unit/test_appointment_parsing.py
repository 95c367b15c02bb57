from datetime import UTC, datetime, timedelta

import pytest

from pqsync.intakeq.models import AppointmentQuery, MalformedRecord, parse_appointment

FULL = {
    "Id": "abc123",
    "ClientId": 5521,
    "ClientName": "Austin Schneider",
    "ClientEmail": "BWhipkey@FirstStepHouse.org",
    "ClientPhone": "555-0100",
    "PractitionerId": "xyz789",
    "PractitionerName": "Dr. C. Rufus Sweeney",
    "PractitionerEmail": "dr.sweeney@trymoonlit.com",
    "ServiceId": "service-123",
    "ServiceName": "Follow-up",
    "LocationId": "1",
    "LocationName": "Main office",
    "Status": "Confirmed",
    "StartDate": 1763215200000,
    "EndDate": 1763218800000,
    "StartDateIso": "2025-11-15T14:00:00.0000000Z",
    "Duration": 60,
    "LastModified": 1763000000000,
    "SomethingNew": {"nested": True},
}


def test_it_parses_a_full_record() -> None:
    appointment = parse_appointment(FULL)
    assert appointment.id == "abc123"
    assert appointment.client_id == 5521
    assert appointment.client_email == "bwhipkey@firststephouse.org"
    assert appointment.start == datetime(2025, 11, 15, 14, 0, tzinfo=UTC)
    assert appointment.end == appointment.start + timedelta(hours=1)
    assert appointment.location_name == "Main office"
    assert appointment.metadata["SomethingNew"] == {"nested": True}
    assert "ClientPhone" not in appointment.metadata


def test_it_tolerates_missing_and_null_fields() -> None:
    appointment = parse_appointment(
        {
            "Id": "x1",
            "StartDateIso": "2025-11-15T14:00:00.0000000Z",
            "ClientId": None,
            "PractitionerId": None,
            "Status": None,
        }
    )
    assert appointment.client_id is None
    assert appointment.practitioner_id is None
    assert appointment.status is None
    assert appointment.end is None


def test_it_falls_back_to_the_iso_field_and_duration() -> None:
    appointment = parse_appointment(
        {
            "Id": "x2",
            "StartDate": None,
            "StartDateIso": "2025-11-15T14:00:00.0000000Z",
            "Duration": 30,
        }
    )
    assert appointment.end == datetime(2025, 11, 15, 14, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ({"StartDate": 1763215200000}, "missing Id"),
        ({"Id": "x3"}, "missing start date"),
        ({"Id": "x4", "StartDate": "not a date"}, "bad date"),
        ({"Id": "x5", "StartDateIso": "2025-02-30T10:00:00Z"}, "bad date"),
        ("just a string", "not a JSON object"),
    ],
)
def test_a_malformed_record_is_a_typed_error(raw: object, reason: str) -> None:
    with pytest.raises(MalformedRecord) as caught:
        parse_appointment(raw)
    assert reason in str(caught.value)


def test_a_malformed_record_error_carries_no_patient_data() -> None:
    with pytest.raises(MalformedRecord) as caught:
        parse_appointment({"Id": "x6", "ClientEmail": "someone@example.org", "StartDate": "x"})
    assert "someone" not in str(caught.value)


def test_the_query_sends_every_filter_in_intakeq_form() -> None:
    from datetime import date

    query = AppointmentQuery(
        client="a@b.org",
        start_date=date(2025, 1, 2),
        end_date=date(2025, 3, 4),
        status="Confirmed",
        practitioner_email="dr@x.org",
        updated_since=date(2025, 1, 1),
        deleted_only=True,
    )
    assert query.params() == {
        "client": "a@b.org",
        "startDate": "2025-01-02",
        "endDate": "2025-03-04",
        "status": "Confirmed",
        "practitionerEmail": "dr@x.org",
        "updatedSince": "2025-01-01",
        "deletedOnly": "true",
    }
