"""The simulator's live appointment book: IntakeQ's queries and the provider's edits."""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from intakeq_sim.clock import Clock
from intakeq_sim.data import (
    STATUSES,
    Client,
    Dataset,
    SimAppointment,
    make_id,
    order_key,
)
from intakeq_sim.query import Filter
from intakeq_sim.timefmt import midnight_ms, ms_from
from intakeq_sim.webhooks import event_for_update

# Told of every change: (IntakeQ event type, the appointment as rendered after it).
ChangeListener = Callable[[str, dict[str, Any]], None]

PAGE_SIZE = 100  # IntakeQ's fixed page size
DELETED_VISIBLE_MS = 10 * 86_400_000  # deletedOnly lists deletions of the last 10 days


class SimError(Exception):
    """A request the simulator refuses; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)


@dataclass(frozen=True)
class AppointmentChanges:
    """What a provider may change on an appointment; None leaves a field as it is."""

    practitioner_id: str | None = None
    service_id: str | None = None
    location_id: str | None = None
    status: str | None = None
    start: datetime | None = None


def _matches(client: Client, needle: str) -> bool:
    # IntakeQ's `client`/`search`: case-insensitive substring of the name or the email.
    return needle in client.name.lower() or needle in client.email.lower()


class AppointmentStore:
    """Thread-safe access to a Dataset's appointments, kept sorted as IntakeQ lists them."""

    def __init__(self, dataset: Dataset, clock: Clock) -> None:
        self.dataset = dataset
        self._clock = clock
        self._lock = dataset.lock
        # (-StartDate, Id) ascending == IntakeQ's order; bisect finds a date range in O(log n).
        self._order = sorted(order_key(a) for a in dataset.appointments.values())
        self._created = 0
        # Bumped by every write, so remembered query results are never stale.
        self._version = 0
        self._cache: tuple[Filter, int, list[SimAppointment]] | None = None
        # Each appointment's JSON, made once up front and again after the data changes: the
        # real API's rendering costs our machine nothing, and a benchmark that shares this
        # machine's cores with the simulator should not be paying for it per request.
        self._encoded: dict[str, bytes] = {}
        self._encoded_version = 0
        self.listener: ChangeListener | None = None
        for appointment in dataset.appointments.values():
            self._encode(appointment)

    def _now_ms(self) -> int:
        return ms_from(self._clock())

    def now_ms(self) -> int:
        """The simulator's clock, in IntakeQ's epoch milliseconds."""
        return self._now_ms()

    def data_changed(self) -> None:
        """Forget remembered listings and renderings after a change made outside this class
        (clients.py's merges and moves)."""
        with self._lock:
            self._version += 1

    # --- reads ---------------------------------------------------------------------------------

    def list_page(self, flt: Filter, page: int) -> list[dict[str, Any]]:
        """One page (1-based) of `GET /appointments`, rendered."""
        with self._lock:
            return [self.dataset.render(a) for a in self._page(flt, page)]

    def list_page_json(self, flt: Filter, page: int) -> bytes:
        """`list_page` as the JSON array it is sent as."""
        with self._lock:
            return b"[" + b",".join([self._encode(a) for a in self._page(flt, page)]) + b"]"

    def _page(self, flt: Filter, page: int) -> list[SimAppointment]:
        first = (page - 1) * PAGE_SIZE
        return self._matches(flt)[first : first + PAGE_SIZE]

    def _encode(self, appointment: SimAppointment) -> bytes:
        """An appointment's rendering as JSON, remembered until the data changes."""
        if self._encoded_version != self._version:
            self._encoded.clear()
            self._encoded_version = self._version
        encoded = self._encoded.get(appointment.id)
        if encoded is None:
            # An exact-size copy: orjson's own bytes keep the ~8 KB buffer they were written
            # in, which for 100,000 appointments is a gigabyte instead of 85 MB.
            encoded = bytes(memoryview(orjson.dumps(self.dataset.render(appointment))))
            self._encoded[appointment.id] = encoded
        return encoded

    def _matches(self, flt: Filter) -> list[SimAppointment]:
        """Every match of a filter, remembered until the data changes: a client paging
        through 100,000 appointments costs one scan, not one scan per page."""
        if flt.deleted_only:  # depends on the clock, not only on the data
            return list(self._select(flt))
        cached = self._cache
        if cached is not None and cached[0] == flt and cached[1] == self._version:
            return cached[2]
        found = list(self._select(flt))
        self._cache = (flt, self._version, found)
        return found

    def _select(self, flt: Filter) -> Iterator[SimAppointment]:
        zone = self.dataset.zone
        first, last = 0, len(self._order)
        if flt.end_date is not None:
            before_ms = midnight_ms(flt.end_date + timedelta(days=1), zone)
            first = bisect.bisect_left(self._order, (-before_ms + 1,))
        if flt.start_date is not None:
            after_ms = midnight_ms(flt.start_date, zone)
            last = bisect.bisect_left(self._order, (-after_ms + 1,))
        client_ids: set[int] | None = None
        if flt.client:
            needle = flt.client.lower()
            client_ids = {c.client_id for c in self.dataset.clients if _matches(c, needle)}
        practitioner_ids: set[str] | None = None
        if flt.practitioner_email:
            wanted = flt.practitioner_email.lower()
            practitioner_ids = {
                p.id for p in self.dataset.practitioners if p.email.lower() == wanted
            }
        since_ms = None
        if flt.updated_since is not None:
            since_ms = midnight_ms(flt.updated_since, zone)
        deleted_after = self._now_ms() - DELETED_VISIBLE_MS
        appointments = self.dataset.appointments
        for index in range(first, max(first, last)):
            a = appointments[self._order[index][1]]
            if flt.deleted_only:
                if a.deleted_ms is None or a.deleted_ms < deleted_after:
                    continue
            elif a.deleted_ms is not None:
                continue
            if client_ids is not None and a.client_id not in client_ids:
                continue
            if practitioner_ids is not None and a.practitioner_id not in practitioner_ids:
                continue
            if flt.status is not None and a.status != flt.status:
                continue
            if since_ms is not None and a.modified_ms < since_ms:
                continue
            yield a

    def get(self, appointment_id: str) -> dict[str, Any]:
        """`GET /appointments/{id}`: 404 when unknown or deleted."""
        with self._lock:
            return self.dataset.render(self._live(appointment_id))

    def _live(self, appointment_id: str) -> SimAppointment:
        appointment = self.dataset.appointments.get(appointment_id)
        if appointment is None or appointment.deleted_ms is not None:
            raise SimError(404, "Appointment not found")
        return appointment

    def _any(self, appointment_id: str) -> SimAppointment:
        appointment = self.dataset.appointments.get(appointment_id)
        if appointment is None:
            raise SimError(404, "Appointment not found")
        return appointment

    def snapshot(self, include_deleted: bool = True) -> list[dict[str, Any]]:
        """Every appointment in listing order, with `Deleted` and `DeletedAt` (ms): ground truth."""
        out = []
        with self._lock:
            for _, appointment_id in self._order:
                a = self.dataset.appointments[appointment_id]
                if a.deleted_ms is not None and not include_deleted:
                    continue
                record = self.dataset.render(a)
                record["Deleted"] = a.deleted_ms is not None
                record["DeletedAt"] = a.deleted_ms
                out.append(record)
        return out

    def settings(self) -> dict[str, Any]:
        """`GET /appointments/settings`."""
        ds = self.dataset
        return {
            "Locations": [{"Id": x.id, "Name": x.name, "Address": x.address} for x in ds.locations],
            "Services": [
                {"Id": s.id, "Name": s.name, "Duration": s.duration, "Price": s.price}
                for s in ds.services
            ],
            "Practitioners": [
                {
                    "Id": p.id,
                    "CompleteName": p.complete_name,
                    "FirstName": p.first_name,
                    "LastName": p.last_name,
                    "Email": p.email,
                }
                for p in ds.practitioners
            ],
        }

    def clients_page(self, search: str | None, page: int) -> list[dict[str, Any]]:
        """`GET /clients?search=&page=`: same partial match as appointments, by ClientId."""
        needle = (search or "").lower()
        found = [c for c in self.dataset.clients if not needle or _matches(c, needle)]
        found.sort(key=lambda c: c.client_id)
        chunk = found[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
        return [
            {
                "ClientId": c.client_id,
                "Name": c.name,
                "FirstName": c.first_name,
                "LastName": c.last_name,
                "Email": c.email,
                "Phone": c.phone,
                "DateOfBirth": c.date_of_birth.isoformat(),
                "Archived": False,
            }
            for c in chunk
        ]

    # --- writes (each sets LastModified to now) --------------------------------------------

    def create(
        self,
        *,
        client_id: int,
        practitioner_id: str,
        service_id: str,
        location_id: str,
        status: str,
        start: datetime,
        booked_by_client: bool = False,
    ) -> dict[str, Any]:
        """Book an appointment; 400 when a referenced client, practitioner, etc. is unknown."""
        ds = self.dataset
        if client_id not in ds.clients_by_id:
            raise SimError(400, "Unknown ClientId")
        self._check_refs(AppointmentChanges(practitioner_id, service_id, location_id, status))
        service = ds.services_by_id[service_id]
        practitioner = ds.practitioners_by_id[practitioner_id]
        with self._lock:
            self._version += 1
            now_ms = self._now_ms()
            self._created += 1
            appointment = SimAppointment(
                id=make_id(ds.seed, "created", self._created),
                client_id=client_id,
                practitioner_id=practitioner_id,
                service_id=service_id,
                location_id=location_id,
                status=status,
                start_ms=ms_from(start),
                duration=service.duration,
                price=service.price,
                created_ms=now_ms,
                modified_ms=now_ms,
                booked_by_client=booked_by_client,
                created_by="Client" if booked_by_client else practitioner.complete_name,
            )
            ds.appointments[appointment.id] = appointment
            bisect.insort(self._order, order_key(appointment))
            return self._changed("AppointmentCreated", appointment)

    def _changed(self, event_type: str, appointment: SimAppointment) -> dict[str, Any]:
        """The appointment rendered, and the listener (webhooks) told (the lock held, so
        events leave in the order the changes happened)."""
        rendered = self.dataset.render(appointment)
        if self.listener is not None:
            self.listener(event_type, rendered)
        return rendered

    def _check_refs(self, changes: AppointmentChanges) -> None:
        ds = self.dataset
        if changes.practitioner_id is not None and changes.practitioner_id not in (
            ds.practitioners_by_id
        ):
            raise SimError(400, "Unknown PractitionerId")
        if changes.service_id is not None and changes.service_id not in ds.services_by_id:
            raise SimError(400, "Unknown ServiceId")
        if changes.location_id is not None and changes.location_id not in ds.locations_by_id:
            raise SimError(400, "Unknown LocationId")
        if changes.status is not None and changes.status not in STATUSES:
            raise SimError(400, "Unknown Status")

    def update(self, appointment_id: str, changes: AppointmentChanges) -> dict[str, Any]:
        """Reschedule, reassign or change the status of a live appointment."""
        self._check_refs(changes)
        with self._lock:
            self._version += 1
            a = self._live(appointment_id)
            old_status = a.status
            now_ms = self._now_ms()
            if changes.start is not None:
                self._move(a, ms_from(changes.start))
            if changes.practitioner_id is not None:
                a.practitioner_id = changes.practitioner_id
            if changes.service_id is not None:
                service = self.dataset.services_by_id[changes.service_id]
                a.service_id, a.duration, a.price = service.id, service.duration, service.price
            if changes.location_id is not None:
                a.location_id = changes.location_id
            if changes.status is not None and changes.status != a.status:
                a.status = changes.status
                canceled = changes.status == "Canceled"
                a.cancellation_ms = now_ms if canceled else None
                if not canceled:
                    a.cancellation_reason = None
            a.modified_ms = now_ms
            return self._changed(event_for_update(old_status, a.status), a)

    def _move(self, a: SimAppointment, start_ms: int) -> None:
        old = order_key(a)
        del self._order[bisect.bisect_left(self._order, old)]
        a.start_ms = start_ms
        bisect.insort(self._order, order_key(a))

    def cancel(self, appointment_id: str, reason: str | None) -> dict[str, Any]:
        """`POST /appointments/cancellation`."""
        with self._lock:
            self._version += 1
            a = self._live(appointment_id)
            a.modified_ms = a.cancellation_ms = self._now_ms()
            a.status = "Canceled"
            a.cancellation_reason = reason
            return self._changed("AppointmentCanceled", a)

    def delete(self, appointment_id: str) -> dict[str, Any]:
        """Soft delete: gone from listings and GET by id, listed by deletedOnly for 10 days."""
        with self._lock:
            self._version += 1
            a = self._live(appointment_id)
            a.modified_ms = a.deleted_ms = self._now_ms()
            return self._changed("AppointmentDeleted", a)

    def restore(self, appointment_id: str) -> dict[str, Any]:
        """Undo a deletion (IntakeQ's recycle bin)."""
        with self._lock:
            self._version += 1
            a = self._any(appointment_id)
            a.deleted_ms = None
            a.modified_ms = self._now_ms()
            return self._changed("AppointmentCreated", a)

    def change_client_email(self, client_id: int, email: str) -> None:
        """The client's email changes in IntakeQ (their appointments now carry the new one)."""
        ds = self.dataset
        with self._lock:
            self._version += 1
            if client_id not in ds.clients_by_id:
                raise SimError(404, "Unknown ClientId")
            changed = dataclasses.replace(ds.clients_by_id[client_id], email=email)
            ds.clients_by_id[client_id] = changed
            ds.clients[:] = [changed if c.client_id == client_id else c for c in ds.clients]
