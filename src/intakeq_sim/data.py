"""The simulator's deterministic practice: clinic, clients, appointments and the demo directory."""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from intakeq_sim.timefmt import from_ms, iso7, midnight_ms, ms_from

STATUSES = ("Confirmed", "WaitingConfirmation", "Canceled", "Declined", "Missed")
WINDOW_DAYS = 90  # the default sync window: 90 days back, 90 days ahead
FSH_SLUG = "first-step-house"
FSH_NAME = "First Step House"
FSH_DOMAIN = "firststephouse.org"
DEMO_PASSWORD = "pqsync-demo-password"  # noqa: S105 - a documented demo credential, not a secret

_ID_NAMESPACE = uuid.UUID("8c5d1f0e-3f7a-4b8e-9a51-3e0c2d7b9f10")
_MINUTE_MS = 60_000
_DAY_MS = 86_400_000


@dataclass(frozen=True)
class Practitioner:
    id: str
    first_name: str
    last_name: str
    email: str
    title: str = "Dr."

    @property
    def complete_name(self) -> str:
        return f"{self.title} {self.first_name} {self.last_name}"


@dataclass(frozen=True)
class Service:
    id: str
    name: str
    duration: int
    price: float
    telehealth: bool = False


@dataclass(frozen=True)
class Location:
    id: str
    name: str
    address: str


@dataclass(frozen=True)
class Client:
    """An IntakeQ client; `organization` is set for partner patients (ours), None otherwise."""

    client_id: int
    first_name: str
    last_name: str
    email: str
    phone: str
    date_of_birth: date
    organization: str | None = None
    # The email our directory holds; may differ from IntakeQ's in letter case.
    directory_email: str | None = None

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}"


@dataclass(slots=True)
class SimAppointment:
    """One stored appointment; mutable because the provider side (control API) edits it."""

    id: str
    client_id: int
    practitioner_id: str
    service_id: str
    location_id: str
    status: str
    start_ms: int
    duration: int
    price: float
    created_ms: int
    modified_ms: int
    booked_by_client: bool
    created_by: str
    intake_id: str | None = None
    cancellation_ms: int | None = None
    cancellation_reason: str | None = None
    deleted_ms: int | None = None

    @property
    def start(self) -> datetime:
        return from_ms(self.start_ms)


@dataclass(frozen=True)
class SpecialCases:
    """The clients and practitioner that exist to trip up a naive sync."""

    heavy: Client  # more than 100 appointments in the default window
    email_substring: Client  # ann@...: its email is part of joann@...'s
    email_superstring: Client  # joann@...
    case_mismatch: Client  # IntakeQ email differs in letter case from the directory's
    plus_address: Client  # casemanager+austin@...
    impostor: Client  # NOT our patient; its email contains ann@... as a substring
    unmapped_practitioner: Practitioner  # holds appointments, absent from the directory
    known_client_ids: tuple[int, ...]  # patients whose intakeq_client_id the directory gives


@dataclass
class Dataset:
    """A practice's data. The simulator mutates `appointments` in place under `lock`."""

    seed: int
    today: date
    timezone: str
    practitioners: list[Practitioner]
    services: list[Service]
    locations: list[Location]
    clients: list[Client]
    appointments: dict[str, SimAppointment]
    special: SpecialCases
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.zone = ZoneInfo(self.timezone)
        self.clients_by_id = {c.client_id: c for c in self.clients}
        self.practitioners_by_id = {p.id: p for p in self.practitioners}
        self.services_by_id = {s.id: s for s in self.services}
        self.locations_by_id = {loc.id: loc for loc in self.locations}

    @property
    def mapped_practitioners(self) -> list[Practitioner]:
        return [p for p in self.practitioners if p != self.special.unmapped_practitioner]

    @property
    def fsh_patients(self) -> list[Client]:
        return [c for c in self.clients if c.organization == FSH_SLUG]

    def default_window(self) -> tuple[date, date]:
        """The default sync range: 90 days back to 90 days ahead of `today` (local dates)."""
        return self.today - timedelta(days=WINDOW_DAYS), self.today + timedelta(days=WINDOW_DAYS)

    def appointments_in_window(
        self, start: date, end: date, client_ids: set[int] | None = None
    ) -> list[SimAppointment]:
        """Live appointments starting on a local date in [start, end], newest first."""
        lo_ms = midnight_ms(start, self.zone)
        hi_ms = midnight_ms(end + timedelta(days=1), self.zone)
        with self.lock:
            found = [
                a
                for a in self.appointments.values()
                if a.deleted_ms is None
                and lo_ms <= a.start_ms < hi_ms
                and (client_ids is None or a.client_id in client_ids)
            ]
        return sorted(found, key=order_key)

    def render(self, appointment: SimAppointment) -> dict[str, Any]:
        """The appointment as IntakeQ's JSON object (every field IntakeQ's API documents)."""
        return render_appointment(self, appointment)


def make_id(*parts: object) -> str:
    """A GUID-shaped id derived from `parts` (e.g. the seed), so ids repeat from run to run."""
    return str(uuid.uuid5(_ID_NAMESPACE, ":".join(map(str, parts))))


def order_key(appointment: SimAppointment) -> tuple[int, str]:
    """IntakeQ's listing order: start descending; the Id keeps equal starts stable."""
    return (-appointment.start_ms, appointment.id)


_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def _local_formatted(moment: datetime) -> str:
    # Spelled out by hand: strftime's %A/%B follow the process locale.
    hour12 = moment.hour % 12 or 12
    half = "AM" if moment.hour < 12 else "PM"
    return (
        f"{_WEEKDAYS[moment.weekday()]}, {_MONTHS[moment.month - 1]} {moment.day}, "
        f"{moment.year} {hour12}:{moment.minute:02d} {half}"
    )


def render_appointment(dataset: Dataset, appointment: SimAppointment) -> dict[str, Any]:
    """Render a stored appointment with IntakeQ's field names and formats."""
    a = appointment
    client = dataset.clients_by_id[a.client_id]
    practitioner = dataset.practitioners_by_id[a.practitioner_id]
    service = dataset.services_by_id[a.service_id]
    location = dataset.locations_by_id[a.location_id]
    start = from_ms(a.start_ms)
    end = start + timedelta(minutes=a.duration)
    local_start = start.astimezone(dataset.zone)
    local_end = end.astimezone(dataset.zone)
    custom_fields: list[dict[str, str]] = []
    if client.organization == FSH_SLUG:
        custom_fields.append({"Name": "Referral source", "Answer": FSH_NAME})
    telehealth = (
        {"Provider": "IntakeQ Telehealth", "StartUrl": f"https://meet.example.invalid/{a.id}"}
        if service.telehealth
        else None
    )
    return {
        "Id": a.id,
        "ClientName": client.name,
        "ClientEmail": client.email,
        "ClientPhone": client.phone,
        "ClientDateOfBirth": client.date_of_birth.isoformat(),
        "ClientId": client.client_id,
        "Status": a.status,
        "StartDate": a.start_ms,
        "EndDate": ms_from(end),
        "Duration": a.duration,
        "ServiceName": service.name,
        "ServiceId": service.id,
        "LocationName": location.name,
        "LocationId": location.id,
        "Price": a.price,
        "PractitionerName": practitioner.complete_name,
        "PractitionerEmail": practitioner.email,
        "PractitionerId": practitioner.id,
        "IntakeId": a.intake_id,
        "DateCreated": a.created_ms,
        "BookedByClient": a.booked_by_client,
        "CreatedBy": a.created_by,
        "StartDateIso": iso7(start),
        "EndDateIso": iso7(end),
        "StartDateLocal": local_start.replace(tzinfo=None).isoformat(timespec="seconds"),
        "EndDateLocal": local_end.replace(tzinfo=None).isoformat(timespec="seconds"),
        "StartDateLocalFormatted": _local_formatted(local_start),
        "CancellationDate": a.cancellation_ms,
        "FullCancellationReason": a.cancellation_reason,
        "TelehealthInfo": telehealth,
        "LastModified": a.modified_ms,
        "CustomFields": custom_fields,
        # Fields our client does not know about: real payloads carry such extras.
        "AdditionalClients": [],
        "AttendanceConfirmationResponse": None,
    }


# --- the fixed clinic -------------------------------------------------------------------------

_PRACTITIONERS = (
    Practitioner("5f1a2b3c4d5e6f7a8b9c0d11", "C. Rufus", "Sweeney", "dr.sweeney@clinic.example"),
    Practitioner("5f1a2b3c4d5e6f7a8b9c0d12", "Maya", "Okafor", "maya.okafor@clinic.example"),
    Practitioner("5f1a2b3c4d5e6f7a8b9c0d13", "Lena", "Hart", "lena.hart@clinic.example"),
    Practitioner("5f1a2b3c4d5e6f7a8b9c0d14", "Jonas", "Whitfield", "j.whitfield@clinic.example"),
)
_UNMAPPED = Practitioner(
    "5f1a2b3c4d5e6f7a8b9c0d99", "Priya", "Natarajan", "locum.natarajan@clinic.example"
)
_SERVICES = (
    Service("3f2504e0-4f89-41d3-9a0c-0305e82c3301", "Initial Psychiatric Evaluation", 60, 250.0),
    Service("3f2504e0-4f89-41d3-9a0c-0305e82c3302", "Follow-up", 30, 150.0),
    Service("3f2504e0-4f89-41d3-9a0c-0305e82c3303", "Telehealth Follow-up", 30, 150.0, True),
    Service("3f2504e0-4f89-41d3-9a0c-0305e82c3304", "Group Therapy", 90, 80.0),
)
_INITIAL, _FOLLOW_UP, _TELEHEALTH, _GROUP = _SERVICES
_LOCATIONS = (
    Location("1", "Salt Lake City Office", "455 E 500 S, Salt Lake City, UT 84111"),
    Location("2", "Telehealth", "Online"),
    Location("3", "Ogden Office", "2540 Washington Blvd, Ogden, UT 84401"),
)
_TELEHEALTH_LOCATION = _LOCATIONS[1]

# Local start times a provider books, incl. evenings (18:00 and later in Denver is the next UTC
# day), which is what breaks date filters built in UTC.
_SLOTS = tuple(time(h, m) for h in range(8, 20) for m in (0, 30))

_FIRST_NAMES = (
    "Maria", "Daniel", "Grace", "Tyler", "Noah", "Olivia", "Ethan", "Chloe", "Lucas", "Ivy",
    "Caleb", "Hazel", "Owen", "Ruby", "Miles", "Nora", "Felix", "Stella", "Henry", "Wren",
)  # fmt: skip
_LAST_NAMES = (
    "Lopez", "Nguyen", "Patel", "Morgan", "Ellis", "Reyes", "Brooks", "Foster", "Hayes", "Kim",
    "Porter", "Quinn", "Santos", "Tate", "Vance", "Wells", "Young", "Zimmer", "Ortiz", "Price",
)  # fmt: skip

FIRST_PATIENT_ID = 5501  # FSH patients count up from here; other clinic clients from 1001


def _client(
    client_id: int, first: str, last: str, email: str, born: date, our_email: str | None = None
) -> Client:
    """A client; giving `our_email` makes them a First Step House patient."""
    organization = FSH_SLUG if our_email else None
    phone = f"(801) 555-{client_id % 10000:04d}"
    return Client(client_id, first, last, email, phone, born, organization, our_email)


def _special_patients() -> list[Client]:
    plus, ann, joann = (f"{n}@{FSH_DOMAIN}" for n in ("casemanager+austin", "ann", "joann"))
    rosa, marcus = f"rosa.delgado@{FSH_DOMAIN}", f"marcus.hill@{FSH_DOMAIN}"
    return [
        _client(5501, "Austin", "Schneider", plus, date(1990, 1, 15), plus),
        _client(5502, "Rosa", "Delgado", rosa, date(1985, 6, 2), rosa),
        _client(5503, "Ann", "Lee", ann, date(1979, 11, 30), ann),
        _client(5504, "Joann", "Baker", joann, date(1993, 3, 8), joann),
        # IntakeQ holds this one in mixed case; our directory has it in lower case.
        _client(
            5505, "Marcus", "Hill", "Marcus.Hill@FirstStepHouse.org", date(1988, 9, 21), marcus
        ),
    ]


def _other_clients() -> list[Client]:
    # The impostor first: a client of the clinic who is not FSH's patient but whose email
    # contains ann@firststephouse.org, so `client=ann@firststephouse.org` returns them too.
    return [
        _client(1001, "Suzann", "Park", f"suzann@{FSH_DOMAIN}", date(1991, 4, 4)),
        _client(1002, "Peter", "Grant", "peter.grant@mail.example", date(1975, 2, 14)),
        _client(1003, "Alice", "Moreno", "alice.moreno@mail.example", date(2001, 7, 19)),
        _client(1004, "Victor", "Chen", "victor.chen@mail.example", date(1968, 12, 1)),
    ]


def _generated_clinic_clients(count: int) -> list[Client]:
    """More of the clinic's own clients (not FSH's) for a large practice: ~40 visits each."""
    return [
        _client(
            2001 + n,
            "Walkin",
            f"Visitor{n}",
            f"visitor{n}@clinic-clients.example",
            date(1950 + n % 50, 1 + n % 12, 1 + n % 28),
        )
        for n in range(count)
    ]


def _generated_patient(index: int) -> Client:
    first = _FIRST_NAMES[index % len(_FIRST_NAMES)]
    combos = len(_FIRST_NAMES) * len(_LAST_NAMES)
    # Shifted per round so neighbours differ in both names; still one pair per index.
    last = _LAST_NAMES[(index + index // len(_FIRST_NAMES)) % len(_LAST_NAMES)]
    # Past every first/last combination a number keeps emails unique, as IntakeQ requires.
    suffix = str(index // combos) if index >= combos else ""
    email = f"{first.lower()}.{last.lower()}{suffix}@{FSH_DOMAIN}"
    born = date(1960 + index % 40, 1 + index % 12, 1 + index % 28)
    return _client(FIRST_PATIENT_ID + 5 + index, first, last, email, born, email)


# --- appointments --------------------------------------------------------------------------------


class _Builder:
    """Generates appointments from one seeded Random, so the same inputs give the same data."""

    def __init__(self, seed: int, today: date, zone: ZoneInfo) -> None:
        self.seed = seed
        self.rng = random.Random(seed)  # noqa: S311 - made-up data, not security
        self.id_rng = random.Random(f"ids:{seed}")  # noqa: S311
        self.today = today
        self.zone = zone
        # Everything generated happened before this moment: data depends on `today`, not the clock.
        self.reference_ms = ms_from(datetime.combine(today, time(7, 0), tzinfo=zone))
        self.appointments: list[SimAppointment] = []

    def next_id(self) -> str:
        # GUID-shaped from a seeded stream: uuid5 per record is a third of a 100k build.
        h = f"{self.id_rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def add(
        self,
        client: Client,
        day: date,
        at: time,
        *,
        practitioner: Practitioner,
        service: Service = _FOLLOW_UP,
        status: str | None = None,
    ) -> SimAppointment:
        rng = self.rng
        start_ms = ms_from(datetime.combine(day, at, tzinfo=self.zone))
        created_ms = min(start_ms - rng.randint(1, 45) * _DAY_MS, self.reference_ms)
        created_ms -= rng.randint(0, 600) * _MINUTE_MS
        past = start_ms < self.reference_ms
        if status is None:
            status = self._status(past)
        modified_ms = created_ms
        if past:
            # The provider closes the visit (attended, missed...) shortly after it starts.
            modified_ms = min(start_ms + rng.randint(60, 600) * _MINUTE_MS, self.reference_ms)
        elif rng.random() < 0.3:
            modified_ms = rng.randint(created_ms, self.reference_ms)
        booked_by_client = rng.random() < 0.25
        appointment = SimAppointment(
            id=self.next_id(),
            client_id=client.client_id,
            practitioner_id=practitioner.id,
            service_id=service.id,
            location_id=self._location(service).id,
            status=status,
            start_ms=start_ms,
            duration=service.duration,
            price=service.price,
            created_ms=created_ms,
            modified_ms=max(modified_ms, created_ms),
            booked_by_client=booked_by_client,
            created_by="Client" if booked_by_client else practitioner.complete_name,
            intake_id=(self.next_id() if service is _INITIAL else None),
        )
        if status == "Canceled":
            appointment.cancellation_ms = appointment.modified_ms
            appointment.cancellation_reason = rng.choice(
                ("Client request", "Provider unavailable", "Scheduling conflict")
            )
        self.appointments.append(appointment)
        return appointment

    def _status(self, past: bool) -> str:
        roll = self.rng.random()
        if past:
            if roll < 0.75:
                return "Confirmed"
            if roll < 0.85:
                return "Missed"
            return "Canceled" if roll < 0.95 else "Declined"
        if roll < 0.6:
            return "Confirmed"
        return "WaitingConfirmation" if roll < 0.9 else "Canceled"

    def _location(self, service: Service) -> Location:
        if service.telehealth:
            return _TELEHEALTH_LOCATION
        return _LOCATIONS[0] if self.rng.random() < 0.8 else _LOCATIONS[2]

    def random_slot(self) -> time:
        return self.rng.choice(_SLOTS)

    def random_service(self) -> Service:
        roll = self.rng.random()
        if roll < 0.55:
            return _FOLLOW_UP
        if roll < 0.85:
            return _TELEHEALTH
        return _INITIAL if roll < 0.95 else _GROUP


def _weekday(day: date) -> date:
    """Move a weekend day to the following Monday (the clinic books weekdays)."""
    return day + timedelta(days=(7 - day.weekday()) % 7) if day.weekday() >= 5 else day


def _dst_changes(zone: ZoneInfo, around: date, days: int) -> list[date]:
    """Local dates on which `zone`'s UTC offset changes, within `days` of `around`."""
    changes = []
    previous = datetime.combine(around - timedelta(days=days), time(12), tzinfo=zone).utcoffset()
    for offset in range(-days + 1, days + 1):
        day = around + timedelta(days=offset)
        current = datetime.combine(day, time(12), tzinfo=zone).utcoffset()
        if current != previous:
            changes.append(day)
        previous = current
    return changes


def _edge_cases(b: _Builder, special: SpecialCases, doctors: list[Practitioner]) -> None:
    """Appointments placed on purpose where a naive sync goes wrong."""
    today, day = b.today, timedelta(days=1)
    sweeney, okafor = doctors[0], doctors[1]
    ann, joann = special.email_substring, special.email_superstring
    # Evenings in Denver are the next day in UTC.
    b.add(ann, today + 3 * day, time(18, 30), practitioner=okafor, status="Confirmed")
    b.add(ann, today - 2 * day, time(19, 0), practitioner=okafor, status="Confirmed")
    # Window edges: in the window by local date though not by UTC date, and the reverse.
    b.add(joann, today + WINDOW_DAYS * day, time(19, 0), practitioner=sweeney)
    b.add(joann, today - WINDOW_DAYS * day, time(8, 0), practitioner=sweeney)
    b.add(joann, today - (WINDOW_DAYS + 1) * day, time(19, 30), practitioner=sweeney)
    b.add(joann, today + (WINDOW_DAYS + 1) * day, time(8, 0), practitioner=sweeney)
    # Far outside the window: backfill territory and the distant future.
    b.add(joann, today - 200 * day, time(10, 0), practitioner=sweeney, status="Confirmed")
    b.add(joann, today + 150 * day, time(10, 0), practitioner=sweeney, status="Confirmed")
    # Same local hour on both sides of each DST change (the UTC hour differs).
    for change in _dst_changes(b.zone, today, 200):
        for offset in (-2, 1):
            b.add(special.case_mismatch, change + offset * day, time(10, 0), practitioner=okafor)
        b.add(special.case_mismatch, change + day, time(18, 30), practitioner=okafor)
    # Every status at least once in the window, each on a plausible side of today.
    for status, days in zip(STATUSES, (7, 14, 10, -10, -14), strict=True):
        when = _weekday(today + days * day)
        b.add(special.plus_address, when, time(11), practitioner=sweeney, status=status)
    # The unmapped practitioner sees our patients inside the window.
    locum = special.unmapped_practitioner
    b.add(special.plus_address, _weekday(today + 5 * day), time(15), practitioner=locum)
    b.add(special.case_mismatch, _weekday(today - 6 * day), time(9, 30), practitioner=locum)
    # The impostor is seen in the window too, so a partial match really does return them.
    b.add(special.impostor, _weekday(today + 4 * day), time(13, 0), practitioner=okafor)
    b.add(special.impostor, _weekday(today - 4 * day), time(18, 30), practitioner=okafor)


def _natural_schedule(
    b: _Builder, clients: Iterable[Client], special: SpecialCases, doctors: list[Practitioner]
) -> None:
    """A plausible practice: weekly-ish visits ±130 days, the heavy patient on every weekday."""
    rng, today = b.rng, b.today
    for client in clients:
        primary = rng.choice(doctors)
        if client == special.heavy:
            # Intensive outpatient: group therapy every weekday, well past 100 in the window.
            for offset in range(-WINDOW_DAYS - 5, WINDOW_DAYS + 6):
                day = today + timedelta(days=offset)
                if day.weekday() < 5:
                    b.add(client, day, time(9, 0), practitioner=primary, service=_GROUP)
            continue
        day = today - timedelta(days=130 - rng.randint(0, 13))
        first = True
        while day <= today + timedelta(days=130):
            practitioner = special.unmapped_practitioner if rng.random() < 0.05 else primary
            service = _INITIAL if first else b.random_service()
            slot = b.random_slot()
            b.add(client, _weekday(day), slot, practitioner=practitioner, service=service)
            first = False
            day += timedelta(days=rng.choice((7, 7, 10, 14)))


def _scaled_schedule(
    b: _Builder,
    clients: list[Client],
    total: int,
    special: SpecialCases,
    doctors: list[Practitioner],
    fsh_share: float = 0.85,
) -> None:
    """`total` appointments spread over the clients and 120 days either side of today;
    `fsh_share` of them go to First Step House patients, the rest to other clinic clients."""
    rng, today = b.rng, b.today
    everyone = [*doctors, special.unmapped_practitioner]
    primaries = {c.client_id: rng.choice(doctors) for c in clients}
    fsh = [c for c in clients if c.organization == FSH_SLUG]
    others = [c for c in clients if c.organization != FSH_SLUG]
    while len(b.appointments) < total:
        pool = others if others and rng.random() >= fsh_share else fsh
        client = pool[rng.randrange(len(pool))]
        practitioner = everyone[-1] if rng.random() < 0.03 else primaries[client.client_id]
        day = today + timedelta(days=rng.randint(-120, 120))
        b.add(client, day, b.random_slot(), practitioner=practitioner, service=b.random_service())


def _soft_delete_some(b: _Builder, ids_to_keep: set[str]) -> None:
    """Deleted shortly before `today` (listed by deletedOnly) and once long ago (not listed)."""
    candidates = [a for a in b.appointments if a.id not in ids_to_keep]
    for days_ago, appointment in zip((1, 3, 6, 25), b.rng.sample(candidates, 4), strict=True):
        appointment.deleted_ms = b.reference_ms - days_ago * _DAY_MS
        appointment.modified_ms = max(appointment.modified_ms, appointment.deleted_ms)


def build_dataset(
    seed: int = 1,
    today: date | None = None,
    *,
    patients: int = 12,
    appointments: int | None = None,
    timezone: str = "America/Denver",
    fsh_share: float = 0.85,
) -> Dataset:
    """Build the practice deterministically: the same (seed, today, sizes) give the same data.

    `patients` First Step House patients (at least 5: the special cases); `appointments`
    replaces the natural schedule with that many appointments in total (for benchmarks), of
    which about `fsh_share` belong to First Step House.
    """
    special_patients = _special_patients()
    if patients < len(special_patients):
        raise ValueError(f"patients must be at least {len(special_patients)}")
    if appointments is not None and appointments < 0:
        raise ValueError("appointments must not be negative")
    zone = ZoneInfo(timezone)
    if today is None:
        today = datetime.now(UTC).astimezone(zone).date()
    fsh = special_patients + [
        _generated_patient(i) for i in range(patients - len(special_patients))
    ]
    others = _other_clients()
    special = SpecialCases(
        heavy=fsh[1],
        email_substring=fsh[2],
        email_superstring=fsh[3],
        case_mismatch=fsh[4],
        plus_address=fsh[0],
        impostor=others[0],
        unmapped_practitioner=_UNMAPPED,
        known_client_ids=(fsh[0].client_id, fsh[1].client_id),
    )
    doctors = list(_PRACTITIONERS)
    builder = _Builder(seed, today, zone)
    _edge_cases(builder, special, doctors)
    edge_ids = {a.id for a in builder.appointments}
    if appointments is None:
        _natural_schedule(builder, [*fsh, *others], special, doctors)
    else:
        del builder.appointments[appointments:]
        others += _generated_clinic_clients(int(appointments * (1 - fsh_share)) // 40)
        _scaled_schedule(builder, [*fsh, *others], appointments, special, doctors, fsh_share)
    if len(builder.appointments) > len(edge_ids) + 4:
        _soft_delete_some(builder, edge_ids)
    return Dataset(
        seed=seed,
        today=today,
        timezone=timezone,
        practitioners=[*doctors, _UNMAPPED],
        services=list(_SERVICES),
        locations=list(_LOCATIONS),
        clients=[*fsh, *others],
        appointments={a.id: a for a in builder.appointments},
        special=special,
    )
