"""Typed IntakeQ records, parsed leniently: missing, null and unknown fields are tolerated."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pqsync.domain.times import TimeParseError, from_epoch_ms, parse_iso_utc

# The only IntakeQ fields kept in an appointment's metadata (minimum necessary): what pqsync
# shows or uses beyond its columns. An allow-list, so a field IntakeQ adds later is not kept
# by default; never the client's phone or date of birth, never a telehealth start URL.
METADATA_FIELDS = frozenset(
    {
        "LocationName",  # shown on the dashboard
        "PractitionerName",  # the staff's page of practitioners to map
        "PractitionerEmail",
    }
)


class MalformedRecord(ValueError):
    """One IntakeQ record that cannot be used. Never carries patient data in its message."""

    def __init__(
        self,
        reason: str,
        appointment_id: str | None = None,
        *,
        client_id: int | None = None,
        client_email: str | None = None,
    ) -> None:
        self.reason = reason
        self.appointment_id = appointment_id
        # Whose record it is, when that much could be read: lets a sync tell its own
        # patients' broken records (errors) from other clients' (not its business).
        self.client_id = client_id
        self.client_email = client_email
        where = f" (appointment {appointment_id})" if appointment_id else ""
        super().__init__(f"malformed IntakeQ appointment{where}: {reason}")


@dataclass(frozen=True)
class Appointment:
    id: str
    client_id: int | None
    client_name: str | None
    client_email: str | None
    practitioner_id: str | None
    practitioner_name: str | None
    practitioner_email: str | None
    service_id: str | None
    service_name: str | None
    status: str | None
    start: datetime
    end: datetime | None
    last_modified: datetime | None
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def location_name(self) -> str | None:
        value = self.metadata.get("LocationName")
        return value if isinstance(value, str) else None


def version(appointment: Appointment) -> int:
    """One number for this version of an appointment: every field compared, so an edit
    shows even where IntakeQ left `LastModified` unchanged or out (it is only reported)."""
    return hash(appointment)


@dataclass(frozen=True)
class AppointmentQuery:
    """Filters of `GET /appointments` (IntakeQ's query parameters)."""

    client: str | None = None
    start_date: date | None = None
    end_date: date | None = None
    status: str | None = None
    practitioner_email: str | None = None
    updated_since: date | None = None
    deleted_only: bool = False

    def params(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.client:
            out["client"] = self.client
        if self.start_date:
            out["startDate"] = self.start_date.isoformat()
        if self.end_date:
            out["endDate"] = self.end_date.isoformat()
        if self.status:
            out["status"] = self.status
        if self.practitioner_email:
            out["practitionerEmail"] = self.practitioner_email
        if self.updated_since:
            out["updatedSince"] = self.updated_since.isoformat()
        if self.deleted_only:
            out["deletedOnly"] = "true"
        return out


def _text_of(value: Any) -> str | None:
    """A text field's value: stripped, None when null or blank (numbers become text)."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _int_of(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _moment(raw: dict[str, Any], ms_key: str, iso_key: str) -> datetime | None:
    """Prefer epoch milliseconds, fall back to the ISO field; None when neither is present."""
    ms = raw.get(ms_key)
    if isinstance(ms, bool):
        ms = None
    if isinstance(ms, int | float):
        return from_epoch_ms(ms)
    if isinstance(ms, str) and ms.strip().lstrip("-").isdigit():
        return from_epoch_ms(int(ms))
    iso = raw.get(iso_key)
    if isinstance(iso, str) and iso.strip():
        return parse_iso_utc(iso)
    if ms not in (None, ""):
        raise TimeParseError(f"{ms_key} is not a timestamp")
    return None


def _broken(
    reason: str, appointment_id: str | None, client_id: int | None, email: str | None
) -> MalformedRecord:
    return MalformedRecord(
        reason, appointment_id, client_id=client_id, client_email=email.lower() if email else None
    )


_new_object = object.__new__
_from_timestamp = datetime.fromtimestamp


def parse_appointment(raw: Any) -> Appointment:
    """Parse one appointment object; raise MalformedRecord when it has no usable Id or start.

    Runs for every record of every page, so the usual shapes (text already stripped, epoch
    milliseconds as integers) take inline paths; anything else goes through the same
    lenient helpers (`_text_of`, `_int_of`, `_moment`).
    """
    if not isinstance(raw, dict):
        raise MalformedRecord("not a JSON object")
    get = raw.get
    value = get("Id")
    appointment_id = (value.strip() or None) if type(value) is str else _text_of(value)
    value = get("ClientEmail")
    email = (value.strip() or None) if type(value) is str else _text_of(value)
    value = get("ClientId")
    client_id = value if type(value) is int else _int_of(value)
    if appointment_id is None:
        raise _broken("missing Id", None, client_id, email)
    start_ms, end_ms, modified_ms = get("StartDate"), get("EndDate"), get("LastModified")
    moments: tuple[datetime | None, datetime | None, datetime | None] | None = None
    if type(start_ms) is int and type(end_ms) is int and type(modified_ms) is int:
        # The usual shape: from_epoch_ms's conversion, without its cost. Any failure goes
        # the general way below, which raises from_epoch_ms's own error.
        try:
            moments = (
                _from_timestamp(start_ms / 1000.0, UTC),
                _from_timestamp(end_ms / 1000.0, UTC),
                _from_timestamp(modified_ms / 1000.0, UTC),
            )
        except (OverflowError, OSError, ValueError):
            moments = None
    if moments is None:
        try:
            moments = (
                _moment(raw, "StartDate", "StartDateIso"),
                _moment(raw, "EndDate", "EndDateIso"),
                _moment(raw, "LastModified", "LastModifiedIso"),
            )
        except TimeParseError as exc:
            raise _broken(f"bad date ({exc})", appointment_id, client_id, email) from None
    start, end, last_modified = moments
    if start is None:
        raise _broken("missing start date", appointment_id, client_id, email)
    if end is None and isinstance(get("Duration"), int | float):
        end = start + timedelta(minutes=float(raw["Duration"]))
    fields = {
        "id": appointment_id,
        "client_id": client_id,
        "client_name": _text_of(get("ClientName")),
        "client_email": email.lower() if email else None,
        "practitioner_id": _text_of(get("PractitionerId")),
        "practitioner_name": _text_of(get("PractitionerName")),
        "practitioner_email": _text_of(get("PractitionerEmail")),
        "service_id": _text_of(get("ServiceId")),
        "service_name": _text_of(get("ServiceName")),
        "status": _text_of(get("Status")),
        "start": start,
        "end": end,
        "last_modified": last_modified,
        "metadata": {k: v for k, v in raw.items() if k in METADATA_FIELDS and v is not None},
    }
    # What the frozen dataclass's __init__ does (one object.__setattr__ per field), without
    # its cost; tests/unit/test_appointment_parsing.py checks the two stay the same.
    appointment: Appointment = _new_object(Appointment)
    appointment.__dict__.update(fields)
    return appointment


@dataclass(frozen=True)
class Practitioner:
    id: str
    name: str | None
    email: str | None


@dataclass(frozen=True)
class PracticeSettings:
    practitioners: list[Practitioner]
    services: list[dict[str, Any]]
    locations: list[dict[str, Any]]


@dataclass(frozen=True)
class Client:
    client_id: int
    name: str | None
    email: str | None
