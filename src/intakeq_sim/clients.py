"""Changes to IntakeQ's clients a provider makes: merges, moving an appointment to another
client, and new client profiles (including one that shares another client's email).

Every change here sets the moved appointments' LastModified to now, as IntakeQ does, so an
`updatedSince` query lists them again.
"""

from __future__ import annotations

from datetime import date

from intakeq_sim.data import Client
from intakeq_sim.store import AppointmentStore, SimError


def add_client(
    store: AppointmentStore,
    *,
    first_name: str,
    last_name: str,
    email: str,
    date_of_birth: date | None = None,
    organization: str | None = None,
) -> Client:
    """A new client profile with the next free ClientId. Its email may equal another client's
    (IntakeQ does not require emails to be unique: a family member, a re-created profile)."""
    ds = store.dataset
    with ds.lock:
        client_id = max(ds.clients_by_id, default=1000) + 1
        client = Client(
            client_id=client_id,
            first_name=first_name,
            last_name=last_name,
            email=email,
            phone=f"(801) 555-{client_id % 10000:04d}",
            date_of_birth=date_of_birth or date(1990, 1, 1),
            organization=organization,
            directory_email=email if organization else None,
        )
        ds.clients.append(client)
        ds.clients_by_id[client_id] = client
        store.data_changed()
        return client


def move_appointment(store: AppointmentStore, appointment_id: str, client_id: int) -> None:
    """The provider moves one appointment to another client (it was booked on the wrong one)."""
    ds = store.dataset
    with ds.lock:
        if client_id not in ds.clients_by_id:
            raise SimError(404, "Unknown ClientId")
        appointment = ds.appointments.get(appointment_id)
        if appointment is None or appointment.deleted_ms is not None:
            raise SimError(404, "Appointment not found")
        appointment.client_id = client_id
        appointment.modified_ms = store.now_ms()
        store.data_changed()


def merge_clients(store: AppointmentStore, duplicate_id: int, kept_id: int) -> int:
    """IntakeQ's "merge clients": every appointment of `duplicate_id` (deleted ones too) moves
    to `kept_id` and the duplicate profile disappears. Returns how many appointments moved."""
    ds = store.dataset
    with ds.lock:
        if duplicate_id == kept_id:
            raise SimError(400, "A client cannot be merged into itself")
        if duplicate_id not in ds.clients_by_id or kept_id not in ds.clients_by_id:
            raise SimError(404, "Unknown ClientId")
        now_ms = store.now_ms()
        moved = 0
        for appointment in ds.appointments.values():
            if appointment.client_id == duplicate_id:
                appointment.client_id = kept_id
                appointment.modified_ms = now_ms
                moved += 1
        del ds.clients_by_id[duplicate_id]
        ds.clients[:] = [c for c in ds.clients if c.client_id != duplicate_id]
        store.data_changed()
        return moved


def change_email(store: AppointmentStore, client_id: int, email: str) -> Client:
    """The client's email changes in IntakeQ (their appointments now carry the new one)."""
    store.change_client_email(client_id, email)
    return store.dataset.clients_by_id[client_id]


def client_json(client: Client) -> dict[str, object]:
    return {
        "ClientId": client.client_id,
        "Name": client.name,
        "Email": client.email,
        "Organization": client.organization,
    }


def control(
    store: AppointmentStore, method: str, parts: list[str], body: dict[str, object]
) -> object | None:
    """The control API's client routes (under /_sim); None when no route matches.

    GET  /clients                          every client, with its organization
    POST /clients                          {FirstName, LastName, Email, Organization?}
    POST /clients/{id}/merge               {IntoClientId}: merge the client into another
    POST /clients/{id}/email               {Email}
    POST /appointments/{id}/client         {ClientId}: move one appointment to that client
    """
    match method, parts:
        case "GET", ["clients"]:
            return [client_json(c) for c in store.dataset.clients]
        case "POST", ["clients"]:
            return client_json(
                add_client(
                    store,
                    first_name=_text(body, "FirstName"),
                    last_name=_text(body, "LastName"),
                    email=_text(body, "Email"),
                    organization=_optional_text(body, "Organization"),
                )
            )
        case "POST", ["clients", client_id, "merge"]:
            moved = merge_clients(store, _int(client_id), _number(body, "IntoClientId"))
            return {"Moved": moved}
        case "POST", ["clients", client_id, "email"]:
            return client_json(change_email(store, _int(client_id), _text(body, "Email")))
        case "POST", ["appointments", appointment_id, "client"]:
            move_appointment(store, appointment_id, _number(body, "ClientId"))
            return store.get(appointment_id)
    return None


def _int(raw: str) -> int:
    if not raw.isdigit():
        raise SimError(400, "A ClientId is a number")
    return int(raw)


def _number(body: dict[str, object], name: str) -> int:
    value = body.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise SimError(400, f"{name} is required and must be a number")
    return value


def _text(body: dict[str, object], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise SimError(400, f"{name} is required")
    return value


def _optional_text(body: dict[str, object], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise SimError(400, f"{name} has the wrong type")
    return value
