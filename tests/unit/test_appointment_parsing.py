from collections.abc import Callable
from dataclasses import FrozenInstanceError, fields
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pqsync.domain.times import TimeParseError
from pqsync.intakeq.models import (
    METADATA_FIELDS,
    Appointment,
    AppointmentQuery,
    MalformedRecord,
    _int_of,
    _moment,
    _text_of,
    parse_appointment,
)

FULL = {
    "Id": "abc123",
    "ClientId": 5521,
    "ClientName": "Austin Schneider",
    "ClientEmail": "BWhipkey@FirstStepHouse.org",
    "ClientPhone": "555-0100",
    "ClientDateOfBirth": "1990-02-03",
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
    "TelehealthInfo": {"Provider": "IntakeQ Telehealth", "StartUrl": "https://meet.invalid/x"},
    "FullCancellationReason": "Scheduling conflict",
}


def test_it_parses_a_full_record() -> None:
    appointment = parse_appointment(FULL)
    assert appointment.id == "abc123"
    assert appointment.client_id == 5521
    assert appointment.client_email == "bwhipkey@firststephouse.org"
    assert appointment.start == datetime(2025, 11, 15, 14, 0, tzinfo=UTC)
    assert appointment.end == appointment.start + timedelta(hours=1)
    assert appointment.location_name == "Main office"
    # Only what pqsync shows or uses: a field IntakeQ adds later is not kept by default,
    # nor the client's phone and birth date, nor the provider's telehealth start URL.
    assert appointment.metadata == {
        "PractitionerName": "Dr. C. Rufus Sweeney",
        "PractitionerEmail": "dr.sweeney@trymoonlit.com",
        "LocationName": "Main office",
    }


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


# -- the inline paths of parse_appointment against the plain rules they stand for ------------


# The plain rules are models.py's lenient helpers (_text_of, _int_of, _moment), which
# parse_appointment still falls back to for shapes its inline paths do not take.


def _reference_parse(raw: Any) -> Appointment:
    """parse_appointment as it read before its inline paths, field by field."""
    if not isinstance(raw, dict):
        raise MalformedRecord("not a JSON object")
    appointment_id = _text_of(raw.get("Id"))
    email = _text_of(raw.get("ClientEmail"))
    client_id = _int_of(raw.get("ClientId"))

    def broken(reason: str) -> MalformedRecord:
        lowered = email.lower() if email else None
        return MalformedRecord(reason, appointment_id, client_id=client_id, client_email=lowered)

    if appointment_id is None:
        raise broken("missing Id")
    try:
        start = _moment(raw, "StartDate", "StartDateIso")
        end = _moment(raw, "EndDate", "EndDateIso")
        last_modified = _moment(raw, "LastModified", "LastModifiedIso")
    except TimeParseError as exc:
        raise broken(f"bad date ({exc})") from None
    if start is None:
        raise broken("missing start date")
    if end is None and isinstance(raw.get("Duration"), int | float):
        end = start + timedelta(minutes=float(raw["Duration"]))
    return Appointment(
        id=appointment_id,
        client_id=client_id,
        client_name=_text_of(raw.get("ClientName")),
        client_email=email.lower() if email else None,
        practitioner_id=_text_of(raw.get("PractitionerId")),
        practitioner_name=_text_of(raw.get("PractitionerName")),
        practitioner_email=_text_of(raw.get("PractitionerEmail")),
        service_id=_text_of(raw.get("ServiceId")),
        service_name=_text_of(raw.get("ServiceName")),
        status=_text_of(raw.get("Status")),
        start=start,
        end=end,
        last_modified=last_modified,
        metadata={k: v for k, v in raw.items() if k in METADATA_FIELDS and v is not None},
    )


def _outcome(parse: Callable[[Any], Appointment], raw: Any) -> tuple[Any, ...]:
    try:
        parsed = parse(raw)
    except MalformedRecord as exc:
        return ("malformed", str(exc), exc.appointment_id, exc.client_id, exc.client_email)
    except Exception as exc:
        return ("raised", type(exc), str(exc))  # whatever escapes must escape from both
    # The fields as the dataclass sees them, metadata and its key order included.
    return ("parsed", parsed, list(vars(parsed).items()), list(parsed.metadata.items()))


_MS = 1_763_215_200_000
_moments = st.one_of(
    st.just(_MS),
    st.integers(min_value=-(10**18), max_value=10**18),
    st.integers(min_value=10**300, max_value=10**301),  # beyond a float
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.sampled_from(["", "  ", str(_MS), f" {_MS} ", "-5", "12.5", "soon", "9" * 400]),
    st.none(),
)
_texts = st.one_of(
    st.none(),
    st.text(alphabet=" \tab@X.1", max_size=6),
    st.integers(min_value=-5, max_value=10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
)
_isos = st.one_of(
    st.none(),
    st.sampled_from(["", "2025-11-15T14:00:00.0000000Z", "2025-02-30T10:00:00Z", "later", 5]),
)
_records = st.fixed_dictionaries(
    {},
    optional={
        "Id": _texts,
        "ClientId": st.one_of(_texts, st.sampled_from([" 42 ", "4.5", "", "x", float("inf")])),
        "ClientEmail": _texts,
        "ClientName": _texts,
        "ClientPhone": _texts,
        "PractitionerId": _texts,
        "PractitionerName": _texts,
        "PractitionerEmail": _texts,
        "ServiceId": _texts,
        "ServiceName": _texts,
        "Status": _texts,
        "StartDate": _moments,
        "EndDate": _moments,
        "LastModified": _moments,
        "StartDateIso": _isos,
        "EndDateIso": _isos,
        "LastModifiedIso": _isos,
        "Duration": st.one_of(st.none(), st.integers(-100, 10**4), st.floats(-1e3, 1e3), _texts),
        "LocationName": _texts,
        "CustomFields": st.one_of(
            st.none(), st.lists(st.dictionaries(st.text(max_size=3), _texts))
        ),
    },
)


@given(
    st.one_of(
        _records,
        _records.map(lambda r: {"Id": "a1", "StartDate": _MS, "EndDate": _MS, **r}),
        _records.map(lambda r: {**r, "StartDate": _MS, "EndDate": _MS, "LastModified": _MS}),
    )
)
def test_parsing_matches_the_plain_rules_for_any_record(raw: dict[str, Any]) -> None:
    assert _outcome(parse_appointment, raw) == _outcome(_reference_parse, raw)


def test_a_parsed_appointment_is_the_one_its_constructor_builds() -> None:
    parsed = parse_appointment(FULL)
    built = Appointment(**{f.name: getattr(parsed, f.name) for f in fields(Appointment)})

    assert parsed == built
    assert vars(parsed) == vars(built)
    assert list(vars(parsed)) == list(vars(built))  # every field, in the same order
    with pytest.raises(FrozenInstanceError):
        parsed.id = "changed"  # type: ignore[misc]
    assert hash(parsed) == hash(built)
