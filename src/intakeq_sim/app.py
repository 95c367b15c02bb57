"""Request handling: IntakeQ's API under /api/v1 and the provider's control API under /_sim.

Independent of the HTTP server so the rules (auth, limits, faults, filters) read in one place;
server.py only moves bytes.
"""

from __future__ import annotations

import hmac
import json
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, TypeVar

from intakeq_sim.clients import control as client_control
from intakeq_sim.clock import Clock, utc_now
from intakeq_sim.config import DEFAULT_API_KEY, SimConfig
from intakeq_sim.data import STATUSES, Dataset
from intakeq_sim.directory import demo_directory
from intakeq_sim.query import Filter
from intakeq_sim.store import (
    AppointmentChanges,
    AppointmentStore,
    SimError,
)
from intakeq_sim.timefmt import BadTimestamp, from_ms, parse_iso
from intakeq_sim.traffic import (
    FaultPlan,
    RateLimiter,
    TrafficStats,
    malform,
    malformed_kind,
)
from intakeq_sim.webhooks import WebhookSender

API_PREFIX = "/api/v1"
CONTROL_PREFIX = "/_sim"
BOOKABLE_STATUSES = ("Confirmed", "WaitingConfirmation")  # what POST /appointments accepts

T = TypeVar("T")

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# IntakeQ refuses dates it cannot store with a 400, as it does malformed ones.
_EARLIEST, _LATEST = date(1900, 1, 1), date(2999, 12, 31)
_LOOPBACK = re.compile(r"^(127\.\d+\.\d+\.\d+|::1|::ffff:127\.\d+\.\d+\.\d+)$")


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # without the query string
    query: Mapping[str, str]  # parameter names lower-cased, first value only
    auth_key: str | None
    body: bytes
    client_host: str


@dataclass(frozen=True)
class Response:
    status: int = 200
    payload: Any = None
    drop: bool = False  # close the connection without sending anything
    body: bytes | None = None  # the payload already encoded as JSON


def _error(status: int, message: str) -> Response:
    # ASP.NET Web API's error shape, as IntakeQ answers; never echoes the key or input.
    return Response(status, {"Message": message})


class SimulatorApp:
    """The simulator's behaviour; thread-safe, one instance per server."""

    def __init__(
        self,
        dataset: Dataset,
        *,
        api_key: str = DEFAULT_API_KEY,
        config: SimConfig | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.dataset = dataset
        self.store = AppointmentStore(dataset, clock)
        self.config = config or SimConfig()
        self.stats = TrafficStats()
        self.limiter = RateLimiter()
        self.faults = FaultPlan(dataset.seed)
        self.webhooks = WebhookSender(dataset.seed)
        self.store.listener = self.webhooks.appointment_changed
        # Set on shutdown so hung and slow requests end instead of holding the server.
        self.stopping = threading.Event()
        self._api_key = api_key
        self._clock = clock

    def handle(self, request: Request) -> Response:
        path = request.path.rstrip("/") or "/"
        if path == CONTROL_PREFIX or path.startswith(CONTROL_PREFIX + "/"):
            return self._control(request, path[len(CONTROL_PREFIX) :])
        if path.lower().startswith(API_PREFIX + "/"):
            return self._api(request, path[len(API_PREFIX) :])
        return _error(404, "No such resource")

    # --- the IntakeQ API ---------------------------------------------------------------------

    def _api(self, request: Request, subpath: str) -> Response:
        config = self.config
        route, handler = self._api_route(request.method, subpath)
        if config.latency_ms:
            self.stopping.wait(config.latency_ms / 1000)
        key = request.auth_key or ""
        if not hmac.compare_digest(key.encode(), self._api_key.encode()):
            self.stats.record(route, "401")
            return _error(401, "Authorization has been denied for this request.")
        now = self._clock().timestamp()
        if not self.limiter.admit(key, now, config):
            self.stats.record(route, "429")
            # No Retry-After: the real API gives none either.
            return _error(429, "API rate limit exceeded")
        self.stats.accepted(now, config.minute_window_seconds)
        fault = self.faults.next_fault(config)
        if fault is not None and fault != "error500":
            if fault == "hang":
                self.stopping.wait(config.hang_seconds)
            self.stats.record(route, fault)
            return Response(drop=True)
        if fault == "error500":
            response = _error(500, "An error has occurred.")
        else:
            try:
                response = handler(request)
            except SimError as exc:
                response = _error(exc.status, exc.message)
        self.stats.record(route, str(response.status))
        return response

    def _api_route(self, method: str, subpath: str) -> tuple[str, Callable[[Request], Response]]:
        """(route name for stats, handler); ids are left out of the name."""
        parts = [p for p in subpath.split("/") if p]
        head = [p.lower() for p in parts]
        routes: dict[tuple[str, str], Callable[[Request], Response]] = {
            ("GET", "/appointments"): self._list_appointments,
            ("POST", "/appointments"): self._create_appointment,
            ("PUT", "/appointments"): self._update_appointment,
            ("GET", "/appointments/settings"): lambda _: Response(payload=self.store.settings()),
            ("POST", "/appointments/cancellation"): self._cancel_appointment,
            ("GET", "/clients"): self._list_clients,
        }
        name = "/" + "/".join(head)
        if (method, name) not in routes and len(parts) == 2 and head[0] == "appointments":
            appointment_id = parts[1]
            name = "/appointments/{id}"
            routes[("GET", name)] = lambda _: Response(payload=self.store.get(appointment_id))
        handler = routes.get((method, name))
        if handler is None:
            known = any(path == name for _, path in routes)
            status = 405 if known else 404
            return f"{method} {name}", lambda _: _error(status, "No such resource")
        return f"{method} {name}", handler

    def _list_appointments(self, request: Request) -> Response:
        q = request.query
        flt = Filter(
            client=q.get("client") or None,
            start_date=_date_param(q, "startDate"),
            end_date=_date_param(q, "endDate"),
            status=q.get("status") or None,
            practitioner_email=q.get("practitioneremail") or None,
            updated_since=_date_param(q, "updatedSince"),
            deleted_only=q.get("deletedonly", "").lower() == "true",
        )
        rate = self.config.malformed_rate
        number = 1 if self.config.ignore_page else _page_param(q)
        if not rate:
            return Response(body=self.store.list_page_json(flt, number))
        page = self.store.list_page(flt, number)
        kinds = [malformed_kind(self.dataset.seed, r["Id"], rate) for r in page]
        page = [malform(r, k) if k else r for r, k in zip(page, kinds, strict=True)]
        self.stats.malformed(sum(1 for k in kinds if k))
        return Response(payload=page)

    def _create_appointment(self, request: Request) -> Response:
        body = _json_object(request.body)
        status = _field(body, "Status", str)
        if status not in BOOKABLE_STATUSES:
            raise SimError(400, "Status must be Confirmed or WaitingConfirmation")
        created = self.store.create(
            client_id=_field(body, "ClientId", int),
            practitioner_id=_field(body, "PractitionerId", str),
            service_id=_field(body, "ServiceId", str),
            location_id=_field(body, "LocationId", str),
            status=status,
            start=from_ms(_field(body, "UtcDateTime", int)),
        )
        return Response(payload=created)

    def _update_appointment(self, request: Request) -> Response:
        body = _json_object(request.body)
        appointment_id = _field(body, "Id", str)
        return Response(payload=self.store.update(appointment_id, self._changes(body)))

    def _cancel_appointment(self, request: Request) -> Response:
        body = _json_object(request.body)
        reason = _optional(body, "Reason", str)
        return Response(payload=self.store.cancel(_field(body, "AppointmentId", str), reason))

    def _list_clients(self, request: Request) -> Response:
        q = request.query
        return Response(payload=self.store.clients_page(q.get("search"), _page_param(q)))

    def _changes(self, body: Mapping[str, Any]) -> AppointmentChanges:
        return AppointmentChanges(
            practitioner_id=_optional(body, "PractitionerId", str),
            service_id=_optional(body, "ServiceId", str),
            location_id=_optional(body, "LocationId", str),
            status=_optional(body, "Status", str),
            start=self._start(body),
        )

    def _start(self, body: Mapping[str, Any]) -> datetime | None:
        """A start from `UtcDateTime` (ms), `StartDateIso` or `StartDateLocal` (practice time)."""
        ms = _optional(body, "UtcDateTime", int)
        if ms is not None:
            return from_ms(ms)
        iso = _optional(body, "StartDateIso", str)
        local = _optional(body, "StartDateLocal", str)
        try:
            if iso is not None:
                return parse_iso(iso)
            if local is not None:
                naive = datetime.fromisoformat(local)
                if naive.tzinfo is not None:
                    raise ValueError("StartDateLocal carries no offset")
                return naive.replace(tzinfo=self.dataset.zone).astimezone(UTC)
        except (BadTimestamp, ValueError):
            raise SimError(400, "Invalid start date") from None
        return None

    # --- the control API (the provider's side, for tests and the demo) ------------------------

    def _control(self, request: Request, subpath: str) -> Response:
        if not _LOOPBACK.match(request.client_host):
            return _error(403, "The control API answers loopback clients only")
        try:
            return self._control_route(request, [p for p in subpath.split("/") if p])
        except SimError as exc:
            return _error(exc.status, exc.message)

    def _control_route(self, request: Request, parts: list[str]) -> Response:
        method, store = request.method, self.store
        window = self.config.minute_window_seconds
        match method, parts:
            case "GET", ["info"]:
                return Response(payload=self._info())
            case "GET", ["stats"]:
                return Response(payload=self.stats.snapshot(window))
            case "POST", ["reset-stats"]:
                self.stats.reset()
                return Response(payload=self.stats.snapshot(window))
            case "POST", ["reset-limits"]:
                self.limiter.reset()
                return Response(payload={"ok": True})
            case "GET", ["config"]:
                return Response(payload=self.config.as_dict())
            case "POST", ["config"]:
                try:
                    self.config = self.config.updated(_json_object(request.body))
                except (ValueError, TypeError) as exc:
                    raise SimError(400, str(exc)) from None
                return Response(payload=self.config.as_dict())
            case "GET", ["webhooks"]:
                return Response(payload=self._webhooks_state())
            case "POST", ["webhooks"]:
                try:
                    self.webhooks.configure(_json_object(request.body))
                except (ValueError, TypeError) as exc:
                    raise SimError(400, str(exc)) from None
                return Response(payload=self._webhooks_state())
            case "POST", ["webhooks", "forge"]:
                self.webhooks.forge(_json_object(request.body))
                return Response(status=202, payload=self._webhooks_state())
            case "GET", ["directory"]:
                return Response(payload=demo_directory(self.dataset))
            case "GET", ["appointments"]:
                include = request.query.get("includedeleted", "true").lower() != "false"
                return Response(payload=store.snapshot(include_deleted=include))
            case "POST", ["appointments"]:
                return Response(payload=self._provider_create(_json_object(request.body)))
            case "PATCH", ["appointments", appointment_id]:
                changes = self._changes(_json_object(request.body))
                return Response(payload=store.update(appointment_id, changes))
            case "POST", ["appointments", appointment_id, "cancel"]:
                reason = _optional(_json_object(request.body or b"{}"), "Reason", str)
                return Response(payload=store.cancel(appointment_id, reason))
            case "POST", ["appointments", appointment_id, "delete"]:
                return Response(payload=store.delete(appointment_id))
            case "POST", ["appointments", appointment_id, "restore"]:
                return Response(payload=store.restore(appointment_id))
        if parts and parts[0] in ("clients", "appointments"):
            body = _json_object(request.body) if request.method == "POST" else {}
            payload = client_control(store, method, parts, body)
            if payload is not None:
                return Response(payload=payload)
        return _error(404, "No such control route")

    def _webhooks_state(self) -> dict[str, Any]:
        return {"settings": self.webhooks.knobs.as_dict(), "stats": self.webhooks.stats()}

    def _provider_create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """A provider books: any status, sensible defaults for what the body leaves out."""
        ds = self.dataset
        start = self._start(body)
        if start is None:
            raise SimError(400, "UtcDateTime, StartDateIso or StartDateLocal is required")
        service_id = _optional(body, "ServiceId", str) or ds.services[1].id
        service = ds.services_by_id.get(service_id)
        default_location = ds.locations[1 if service is not None and service.telehealth else 0]
        status = _optional(body, "Status", str) or "Confirmed"
        if status not in STATUSES:
            raise SimError(400, "Unknown Status")
        return self.store.create(
            client_id=_field(body, "ClientId", int),
            practitioner_id=_optional(body, "PractitionerId", str) or ds.mapped_practitioners[0].id,
            service_id=service_id,
            location_id=_optional(body, "LocationId", str) or default_location.id,
            status=status,
            start=start,
            booked_by_client=_optional(body, "BookedByClient", bool) or False,
        )

    def _info(self) -> dict[str, Any]:
        ds = self.dataset
        special = ds.special
        return {
            "seed": ds.seed,
            "today": ds.today.isoformat(),
            "timezone": ds.timezone,
            "appointments": len(ds.appointments),
            "clients": len(ds.clients),
            "special": {
                "heavy": special.heavy.client_id,
                "email_substring": special.email_substring.client_id,
                "email_superstring": special.email_superstring.client_id,
                "case_mismatch": special.case_mismatch.client_id,
                "plus_address": special.plus_address.client_id,
                "impostor": special.impostor.client_id,
                "unmapped_practitioner": special.unmapped_practitioner.id,
            },
        }


# --- parameter and body parsing ----------------------------------------------------------------


def _date_param(query: Mapping[str, str], name: str) -> date | None:
    raw = query.get(name.lower())
    return _parse_date(raw, name) if raw else None


def _parse_date(raw: str, name: str) -> date:
    """IntakeQ's `yyyy-MM-dd`, strictly; 400 names the parameter, not the value."""
    try:
        if not _DATE.match(raw):
            raise ValueError(name)
        day = date.fromisoformat(raw)
        if not _EARLIEST <= day <= _LATEST:
            raise ValueError(name)
        return day
    except ValueError:
        raise SimError(400, f"The request is invalid: {name}") from None


def _page_param(query: Mapping[str, str]) -> int:
    raw = query.get("page") or "1"
    if not raw.isdigit() or int(raw) < 1:
        raise SimError(400, "The request is invalid: page")
    return int(raw)


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError):
        raise SimError(400, "The request body is not JSON") from None
    if not isinstance(value, dict):
        raise SimError(400, "The request body must be a JSON object")
    return value


def _optional(body: Mapping[str, Any], name: str, kind: type[T]) -> T | None:
    value = body.get(name)
    if value is None:
        return None
    # bool is an int in Python, but not a number in a JSON body.
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise SimError(400, f"{name} has the wrong type")
    return value


def _field(body: Mapping[str, Any], name: str, kind: type[T]) -> T:
    value = _optional(body, name, kind)
    if value is None:
        raise SimError(400, f"{name} is required")
    return value
