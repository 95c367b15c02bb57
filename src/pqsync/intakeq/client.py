"""The one client that talks to IntakeQ: request budget, retries, paging, parsing, safe logs.

Rules every call follows (IntakeQ's documented limits and paging):
- every try, retries included, first reserves a slot of the shared `RequestBudget`;
  `BudgetExhausted` propagates unchanged, so a run never spends more than the day allows;
- 429: wait `Retry-After` seconds when given, else `rate_limit_wait` (IntakeQ's minute
  window needs about 60 s), then try again, at most `max_rate_limit_retries` times; a 429
  again after a whole minute window's wait is IntakeQ's daily limit: `BudgetExhausted`;
- 5xx, timeouts and dropped connections: up to `max_retries` retries with capped
  exponential backoff and full jitter. POSTs (create, cancel) are retried only when the
  request certainly never left (connection refused, connect timeout): repeating a
  create that IntakeQ may have processed would book the patient twice;
- a request has a deadline (`deadline`, 25 s): its tries and their backoffs together end
  within it, so a hanging IntakeQ is told as unreachable in about that time (waits for the
  rate limit are announced to the run, see `waits`, and do not count against it);
- 401/403, other 4xx and bodies that are not JSON fail at once with a typed error;
- error messages and log lines carry the path only: never the query string (it holds
  `client=<email>`), never the key.
"""

from __future__ import annotations

import itertools
import math
import random
import threading
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx
import orjson

from pqsync.intakeq import waits
from pqsync.intakeq.budget import RequestBudget
from pqsync.intakeq.errors import (
    BudgetExhausted,
    IntakeQAuthError,
    IntakeQError,
    IntakeQNotFound,
    IntakeQRequestError,
    IntakeQServerError,
    IntakeQUnreachable,
)
from pqsync.intakeq.models import (
    Appointment,
    AppointmentQuery,
    Client,
    MalformedRecord,
    PracticeSettings,
    Practitioner,
    parse_appointment,
)
from pqsync.logging import REDACTED, EventLogger, get_logger

PAGE_SIZE = 100  # IntakeQ's most records a page; a shorter page is the last one

# Query parameters safe to log; every other value (client, search, emails) is redacted.
_LOGGABLE_PARAMS = frozenset(
    {"startDate", "endDate", "status", "page", "updatedSince", "deletedOnly"}
)
# Longest Retry-After we honour; a larger value is treated as this many seconds.
_MAX_RETRY_AFTER = 600.0
_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE"})
# Failures where the request provably never reached IntakeQ: safe to retry any method.
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

Params = dict[str, str]


class IntakeQRateLimited(IntakeQError):
    """IntakeQ kept answering 429 after every rate-limit retry."""

    def __init__(self, path: str, tries: int) -> None:
        self.path = path
        self.tries = tries
        super().__init__(f"IntakeQ kept answering {path} with HTTP 429 (rate limited)")


class IntakeQPagingError(IntakeQError):
    """A listing did not end as IntakeQ's do (the same page twice, or more pages than the
    practice holds): stopped before it spends the day's budget."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        super().__init__(f"IntakeQ's paging of {path} went wrong: {reason}; the run stopped")


class RequestTally:
    """Requests (retries included) sent by one run: counted in the thread that runs it."""

    def __init__(self) -> None:
        self.sent = 0


class IntakeQBadResponse(IntakeQServerError):
    """IntakeQ answered 2xx with a body we cannot use (not JSON, or not the expected shape)."""

    def __init__(self, status: int, path: str, reason: str) -> None:
        super().__init__(status, path)
        self.reason = reason
        self.args = (f"IntakeQ answered {path} with HTTP {status} but {reason}",)


def _loggable(params: Params | None) -> dict[str, str]:
    return {
        key: value if key in _LOGGABLE_PARAMS else REDACTED for key, value in (params or {}).items()
    }


def _text(raw: dict[str, Any], key: str) -> str | None:
    value = raw.get(key)
    text = str(value).strip() if value is not None else ""
    return text or None


def _joined_name(raw: dict[str, Any], full_key: str) -> str | None:
    parts = (_text(raw, "FirstName"), _text(raw, "LastName"))
    return _text(raw, full_key) or " ".join(p for p in parts if p) or None


def _parse_client(raw: Any) -> Client | None:
    if not isinstance(raw, dict):
        return None
    client_id = raw.get("ClientId")
    if isinstance(client_id, str) and client_id.strip().isdigit():
        client_id = int(client_id)
    if not isinstance(client_id, int) or isinstance(client_id, bool):
        return None
    email = _text(raw, "Email")
    return Client(
        client_id=client_id,
        name=_joined_name(raw, "Name"),
        email=email.lower() if email else None,
    )


def _parse_settings(body: Any, path: str) -> PracticeSettings:
    if not isinstance(body, dict):
        raise IntakeQBadResponse(200, path, "the settings are not a JSON object")

    def objects(key: str) -> list[dict[str, Any]]:
        value = body.get(key)
        return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []

    practitioners = [
        Practitioner(
            id=practitioner_id,
            name=_joined_name(raw, "CompleteName"),
            email=_text(raw, "Email"),
        )
        for raw in objects("Practitioners")
        if (practitioner_id := _text(raw, "Id")) is not None
    ]
    return PracticeSettings(
        practitioners=practitioners,
        services=objects("Services"),
        locations=objects("Locations"),
    )


class IntakeQClient:
    """Synchronous IntakeQ API client; use as a context manager or call `close()`."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        budget: RequestBudget,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
        deadline: float = 25.0,
        max_retries: int = 3,
        backoff_base: float = 0.5,
        backoff_cap: float = 8.0,
        rate_limit_wait: float = 60.0,
        max_rate_limit_retries: int = 5,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        logger: EventLogger | None = None,
    ) -> None:
        url = httpx.URL(base_url)
        host = f"[{url.host}]" if ":" in url.host else url.host
        self._host = f"{host}:{url.port}" if url.port else host
        self._http = httpx.Client(
            base_url=base_url,
            transport=transport,
            timeout=timeout,
            # Never follow redirects: httpx would resend X-Auth-Key to wherever they point.
            follow_redirects=False,
            headers={
                "X-Auth-Key": api_key,
                "Accept": "application/json",
                "User-Agent": "pqsync",
            },
        )
        self._budget = budget
        self._deadline = deadline
        self._max_retries = max_retries
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._rate_limit_wait = rate_limit_wait
        self._max_rate_limit_retries = max_rate_limit_retries
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - jitter only
        self._log = logger if logger is not None else get_logger("pqsync.intakeq.client")
        self._sent_lock = threading.Lock()
        self._sent = 0
        # The tally of the run going on in each thread (see `counting`).
        self._tallies = threading.local()

    @property
    def requests_sent(self) -> int:
        """Every request this client sent, in every thread."""
        with self._sent_lock:
            return self._sent

    @contextmanager
    def counting(self) -> Iterator[RequestTally]:
        """Count the requests this thread sends inside the block (one run's own count,
        exact while other threads' runs share the client)."""
        outer = getattr(self._tallies, "current", None)
        tally = RequestTally()
        self._tallies.current = tally
        try:
            yield tally
        finally:
            self._tallies.current = outer

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the underlying connection pool."""
        self._http.close()

    # -- endpoints -------------------------------------------------------------------------

    def appointment_pages(
        self, query: AppointmentQuery
    ) -> Generator[list[Appointment | MalformedRecord], None, None]:
        """Stream `GET /appointments` page by page (100 records a page, ordered by start,
        newest first). A record that cannot be parsed is yielded as its `MalformedRecord`
        in place; the rest of the page is kept. A full page that repeats the one before (a
        server ignoring `page`) raises `IntakeQPagingError`."""
        for records in self._pages("/appointments", query.params()):
            page: list[Appointment | MalformedRecord] = []
            append = page.append
            for raw in records:
                try:
                    append(parse_appointment(raw))
                except MalformedRecord as exc:
                    append(exc)
            yield page

    def get_appointment(self, appointment_id: str) -> Appointment | None:
        """One appointment, or None when IntakeQ answers 404 (missing or deleted)."""
        path = f"/appointments/{quote(appointment_id, safe='')}"
        response = self._request("GET", path, missing_ok=True)
        if response is None:
            return None
        return self._appointment(response, path)

    def practice_settings(self) -> PracticeSettings:
        """Practitioners, services and locations (`GET /appointments/settings`)."""
        path = "/appointments/settings"
        return _parse_settings(self._json(self._send("GET", path), path), path)

    def create_appointment(self, **fields: Any) -> Appointment:
        """Create an appointment (`POST /appointments`, body fields as IntakeQ names them)."""
        path = "/appointments"
        return self._appointment(self._send("POST", path, body=fields), path)

    def update_appointment(self, appointment_id: str, **fields: Any) -> Appointment:
        """Update an appointment (`PUT /appointments` with `Id` in the body)."""
        path = "/appointments"
        body = {**fields, "Id": appointment_id}
        return self._appointment(self._send("PUT", path, body=body), path)

    def cancel_appointment(self, appointment_id: str, reason: str) -> None:
        """Cancel an appointment (`POST /appointments/cancellation`)."""
        body = {"AppointmentId": appointment_id, "Reason": reason}
        self._send("POST", "/appointments/cancellation", body=body)

    def clients(self, search: str | None = None) -> Iterator[Client]:
        """Stream `GET /clients` (partial match on name or email), following pages.
        Records without a usable `ClientId` are skipped with a warning."""
        params = {"search": search} if search else {}
        for records in self._pages("/clients", params):
            for raw in records:
                client = _parse_client(raw)
                if client is None:
                    self._log.warning("intakeq.client_record_skipped", reason="no ClientId")
                    continue
                yield client

    # -- plumbing --------------------------------------------------------------------------

    def _pages(self, path: str, params: Params) -> Iterator[list[Any]]:
        previous: list[Any] | None = None
        for page in itertools.count(1):
            response = self._send("GET", path, params={**params, "page": str(page)})
            body = self._json(response, path)
            if not isinstance(body, list):
                raise IntakeQBadResponse(200, path, "a page is not a JSON array")
            if body and body == previous:
                raise IntakeQPagingError(path, f"page {page} repeated page {page - 1}")
            if body:
                yield body
            if len(body) < PAGE_SIZE:
                return
            previous = body

    def _appointment(self, response: httpx.Response, path: str) -> Appointment:
        try:
            return parse_appointment(self._json(response, path))
        except MalformedRecord as exc:
            raise IntakeQBadResponse(response.status_code, path, str(exc)) from exc

    @staticmethod
    def _json(response: httpx.Response, path: str) -> Any:
        try:
            # orjson parses a page of 100 in about a third of json's time; a body it
            # refuses (not UTF-8, NaN, integers beyond 64 bits) is left to json.
            return orjson.loads(response.content)
        except ValueError:
            pass
        try:
            return response.json()
        except ValueError:
            raise IntakeQBadResponse(response.status_code, path, "the body is not JSON") from None

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        body: Any = None,
    ) -> httpx.Response:
        response = self._request(method, path, params=params, body=body)
        assert response is not None  # only `missing_ok` requests answer None
        return response

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        body: Any = None,
        missing_ok: bool = False,
    ) -> httpx.Response | None:
        """Send with budget, retries and logging; return the 2xx response (None for a 404
        when `missing_ok`) or raise the typed error."""
        idempotent = method in _IDEMPOTENT_METHODS
        failures = rate_limited = attempt = 0
        waited_a_window = False
        waited = 0.0  # announced rate-limit waits, which the deadline leaves out
        begun = time.monotonic()

        def remaining() -> float:
            return self._deadline - (time.monotonic() - begun - waited)

        while True:
            attempt += 1
            before = time.monotonic()
            self._budget.acquire()
            waited += time.monotonic() - before
            self._count_request()
            started = time.perf_counter()
            try:
                timeout = max(0.1, min(remaining(), self._http.timeout.read or self._deadline))
                response = self._http.request(
                    method, path, params=params, json=body, timeout=timeout
                )
            except httpx.TransportError as exc:
                self._budget.settle()
                failures += 1
                retry = failures <= self._max_retries and (
                    idempotent or isinstance(exc, _NEVER_SENT)
                )
                wait = self._backoff(failures) if retry else None
                if wait is not None and wait >= remaining():
                    wait = None  # past the deadline: say so now rather than try again
                self._log_try(method, path, params, attempt, started, wait, error=exc, failed=True)
                if wait is None:
                    raise self._unreachable(exc, path) from None
                self._sleep(wait)
                continue

            self._budget.settle()
            status = response.status_code
            wait = None
            if status == 429:
                rate_limited += 1
                if waited_a_window and "Retry-After" not in response.headers:
                    # A whole minute window went by and IntakeQ still refuses: its daily
                    # limit, not the minute's. Pause rather than retry for minutes.
                    self._log_try(
                        method, path, params, attempt, started, None, status=status, failed=True
                    )
                    raise self._daily_limit_reached()
                if rate_limited <= self._max_rate_limit_retries:
                    wait = self._rate_limit_delay(response)
                    waited_a_window = "Retry-After" not in response.headers
                    waits.announce(wait, "rate_limited")
                    waited += wait
            elif status >= 500:
                failures += 1
                if idempotent and failures <= self._max_retries:
                    wait = self._backoff(failures)
                    if wait >= remaining():
                        wait = None
            failed = status >= 400 and not (status == 404 and missing_ok)
            self._log_try(
                method, path, params, attempt, started, wait, status=status, failed=failed
            )
            if wait is not None:
                self._sleep(wait)
                continue

            if status == 429:
                raise IntakeQRateLimited(path, attempt)
            if status >= 500:
                raise IntakeQServerError(status, path)
            if status in (401, 403):
                raise IntakeQAuthError()
            if status == 404:
                if missing_ok:
                    return None
                raise IntakeQNotFound(path)
            if status >= 300:
                raise IntakeQRequestError(status, path)
            return response

    def _count_request(self) -> None:
        with self._sent_lock:
            self._sent += 1
        tally: RequestTally | None = getattr(self._tallies, "current", None)
        if tally is not None:
            tally.sent += 1

    def _backoff(self, failures: int) -> float:
        """Capped exponential backoff with full jitter."""
        ceiling = min(self._backoff_cap, self._backoff_base * 2 ** (failures - 1))
        return self._rng.uniform(0, ceiling)

    def _daily_limit_reached(self) -> BudgetExhausted:
        """IntakeQ's own day is spent: try again when our oldest request of the last 24 hours
        ages out (a day from now when we know of none)."""
        usage = self._budget.usage()
        frees_at = usage.day_frees_at or datetime.now(UTC) + timedelta(days=1)
        return BudgetExhausted(usage.day_used, usage.daily_limit, frees_at)

    def _rate_limit_delay(self, response: httpx.Response) -> float:
        """`Retry-After` seconds when IntakeQ sends them, else a full minute window."""
        try:
            seconds = float(response.headers.get("Retry-After", ""))
        except ValueError:  # absent, or an HTTP date
            return self._rate_limit_wait
        if not math.isfinite(seconds) or seconds < 0:
            return self._rate_limit_wait
        return min(seconds, _MAX_RETRY_AFTER)

    def _unreachable(self, exc: httpx.TransportError, path: str) -> IntakeQUnreachable:
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return IntakeQUnreachable(f"could not reach IntakeQ at {self._host}")
        if isinstance(exc, httpx.TimeoutException):
            return IntakeQUnreachable(f"IntakeQ at {self._host} did not answer {path} in time")
        return IntakeQUnreachable(f"IntakeQ at {self._host} dropped the connection for {path}")

    def _log_try(
        self,
        method: str,
        path: str,
        params: Params | None,
        attempt: int,
        started: float,
        retry_in_s: float | None,
        *,
        status: int | None = None,
        error: Exception | None = None,
        failed: bool,
    ) -> None:
        fields: dict[str, Any] = {
            "method": method,
            "path": path,
            "params": _loggable(params),
            "try": attempt,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        }
        if status is not None:
            fields["status"] = status
        if error is not None:
            # The class name only: httpx messages may quote the URL.
            fields["error"] = type(error).__name__
        if retry_in_s is not None:
            fields["retry_in_s"] = round(retry_in_s, 3)
        (self._log.warning if failed else self._log.info)("intakeq.request", **fields)
