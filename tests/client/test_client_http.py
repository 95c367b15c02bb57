"""IntakeQClient against fake IntakeQ servers (httpx.MockTransport): paging, retries, errors."""

from __future__ import annotations

import json
import random
import socket
from collections.abc import Callable, Iterator
from datetime import date
from typing import Any

import httpx
import pytest

from pqsync.intakeq.budget import MemoryBudget
from pqsync.intakeq.client import IntakeQBadResponse, IntakeQClient, IntakeQRateLimited
from pqsync.intakeq.errors import (
    BudgetExhausted,
    IntakeQAuthError,
    IntakeQNotFound,
    IntakeQRequestError,
    IntakeQServerError,
    IntakeQUnreachable,
)
from pqsync.intakeq.models import Appointment, AppointmentQuery, MalformedRecord

BASE_URL = "https://intakeq.test/api/v1"
API_KEY = "secret-key-123"
START_MS = 1_761_318_000_000  # 2025-10-24T15:00:00Z

Handler = Callable[[httpx.Request], httpx.Response]


def appointment(n: int) -> dict[str, Any]:
    return {
        "Id": f"appt-{n}",
        "ClientId": 5521,
        "ClientEmail": "Ann@Example.org",
        "Status": "Confirmed",
        "StartDate": START_MS - n * 3_600_000,
        "Duration": 50,
    }


def page_of(first: int, count: int) -> list[dict[str, Any]]:
    return [appointment(n) for n in range(first, first + count)]


class FakeIntakeQ:
    """Answers each request with the next scripted outcome and keeps what it received."""

    def __init__(self, *outcomes: httpx.Response | Exception | Handler) -> None:
        self.outcomes = list(outcomes)
        self.received: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.received.append(request)
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, Exception):
            raise outcome
        if isinstance(outcome, httpx.Response):
            return outcome
        return outcome(request)


def ok(body: Any) -> httpx.Response:
    return httpx.Response(200, json=body)


def paged(pages: list[list[dict[str, Any]]]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        return ok(pages[int(request.url.params["page"]) - 1])

    return handler


class Harness:
    def __init__(self, server: FakeIntakeQ, budget: MemoryBudget, **options: Any) -> None:
        self.server = server
        self.budget = budget
        self.sleeps: list[float] = []
        self.client = IntakeQClient(
            BASE_URL,
            API_KEY,
            budget=budget,
            transport=httpx.MockTransport(server),
            sleep=self.sleeps.append,
            rng=random.Random(7),
            **options,
        )


@pytest.fixture
def harness() -> Iterator[Callable[..., Harness]]:
    built: list[Harness] = []

    def build(*outcomes: Any, daily_limit: int = 1000, **options: Any) -> Harness:
        budget = MemoryBudget(minute_limit=1000, daily_limit=daily_limit)
        made = Harness(FakeIntakeQ(*outcomes), budget, **options)
        built.append(made)
        return made

    yield build
    for made in built:
        made.client.close()


def ids(page: list[Appointment | MalformedRecord]) -> list[str | None]:
    return [item.id if isinstance(item, Appointment) else item.appointment_id for item in page]


# -- paging ----------------------------------------------------------------------------------


def test_it_follows_pages_until_a_short_page(harness: Callable[..., Harness]) -> None:
    h = harness(paged([page_of(0, 100), page_of(100, 100), page_of(200, 37)]))

    pages = list(h.client.appointment_pages(AppointmentQuery()))

    assert [len(page) for page in pages] == [100, 100, 37]
    assert ids(pages[2])[-1] == "appt-236"
    assert [r.url.params["page"] for r in h.server.received] == ["1", "2", "3"]
    assert h.client.requests_sent == 3


def test_a_full_last_page_is_followed_by_an_empty_one(harness: Callable[..., Harness]) -> None:
    h = harness(paged([page_of(0, 100), []]))

    pages = list(h.client.appointment_pages(AppointmentQuery()))

    assert [len(page) for page in pages] == [100]
    assert h.client.requests_sent == 2


def test_pages_stream_one_request_at_a_time(harness: Callable[..., Harness]) -> None:
    h = harness(paged([page_of(0, 100), page_of(100, 5)]))

    pages = h.client.appointment_pages(AppointmentQuery())
    assert h.client.requests_sent == 0
    next(pages)
    assert h.client.requests_sent == 1


def test_it_sends_the_query_and_the_key_header(harness: Callable[..., Harness]) -> None:
    h = harness(ok([]))
    query = AppointmentQuery(
        client="ann@example.org", start_date=date(2025, 10, 1), end_date=date(2025, 10, 31)
    )

    list(h.client.appointment_pages(query))

    request = h.server.received[0]
    assert request.url.path == "/api/v1/appointments"
    assert dict(request.url.params) == {
        "client": "ann@example.org",
        "startDate": "2025-10-01",
        "endDate": "2025-10-31",
        "page": "1",
    }
    assert request.headers["X-Auth-Key"] == API_KEY


def test_a_malformed_record_is_kept_in_place_and_the_rest_parsed(
    harness: Callable[..., Harness],
) -> None:
    records = [appointment(1), {"Id": "appt-bad", "StartDate": "yesterday"}, appointment(3)]
    h = harness(ok(records))

    [page] = list(h.client.appointment_pages(AppointmentQuery()))

    assert ids(page) == ["appt-1", "appt-bad", "appt-3"]
    assert isinstance(page[1], MalformedRecord)
    assert isinstance(page[2], Appointment) and page[2].client_email == "ann@example.org"


def test_budget_exhausted_stops_paging_after_the_pages_already_yielded(
    harness: Callable[..., Harness],
) -> None:
    h = harness(paged([page_of(0, 100), page_of(100, 100), page_of(200, 100)]), daily_limit=2)
    received: list[list[Appointment | MalformedRecord]] = []

    with pytest.raises(BudgetExhausted):
        for page in h.client.appointment_pages(AppointmentQuery()):
            received.append(page)

    assert [len(page) for page in received] == [100, 100]
    assert h.client.requests_sent == 2


# -- retries ---------------------------------------------------------------------------------


def test_429_waits_a_whole_minute_window_then_retries(harness: Callable[..., Harness]) -> None:
    h = harness(httpx.Response(429), ok([appointment(1)]))

    pages = list(h.client.appointment_pages(AppointmentQuery()))

    assert len(pages[0]) == 1
    assert h.sleeps == [60.0]
    assert h.client.requests_sent == 2


def test_429_wait_is_configurable(harness: Callable[..., Harness]) -> None:
    h = harness(httpx.Response(429), ok([]), rate_limit_wait=1.5)
    list(h.client.appointment_pages(AppointmentQuery()))
    assert h.sleeps == [1.5]


def test_429_honours_retry_after(harness: Callable[..., Harness]) -> None:
    h = harness(httpx.Response(429, headers={"Retry-After": "7"}), ok([]))
    list(h.client.appointment_pages(AppointmentQuery()))
    assert h.sleeps == [7.0]


def test_a_429_that_outlasts_a_whole_minute_window_is_intakeqs_daily_limit(
    harness: Callable[..., Harness],
) -> None:
    """IntakeQ's own daily limit answers 429 like its minute limit, but a minute's wait does
    not clear it: the run pauses (BudgetExhausted) instead of retrying for five minutes."""
    h = harness(httpx.Response(429))

    with pytest.raises(BudgetExhausted) as raised:
        list(h.client.appointment_pages(AppointmentQuery()))

    assert h.sleeps == [60.0]
    assert h.client.requests_sent == 2
    assert raised.value.frees_at is not None


def test_429_that_never_ends_raises_rate_limited(harness: Callable[..., Harness]) -> None:
    h = harness(
        httpx.Response(429, headers={"Retry-After": "1"}),
        max_rate_limit_retries=2,
        rate_limit_wait=0.01,
    )

    with pytest.raises(IntakeQRateLimited, match="/appointments"):
        list(h.client.appointment_pages(AppointmentQuery()))

    assert h.client.requests_sent == 3


def dropped(request: httpx.Request) -> httpx.Response:
    raise httpx.RemoteProtocolError("Server disconnected without sending a response.")


def timed_out(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("timed out", request=request)


FAILURES: dict[str, Any] = {
    "500": httpx.Response(500),
    "503": httpx.Response(503, text="<html>down</html>"),
    "timeout": timed_out,
    "dropped connection": dropped,
}


@pytest.mark.parametrize("failure", FAILURES.values(), ids=FAILURES.keys())
def test_transient_failures_are_retried_then_succeed(
    harness: Callable[..., Harness], failure: Any
) -> None:
    h = harness(failure, failure, ok([appointment(1)]))

    [page] = list(h.client.appointment_pages(AppointmentQuery()))

    assert ids(page) == ["appt-1"]
    assert h.client.requests_sent == 3
    assert len(h.sleeps) == 2


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (FAILURES["500"], IntakeQServerError),
        (FAILURES["timeout"], IntakeQUnreachable),
        (FAILURES["dropped connection"], IntakeQUnreachable),
    ],
    ids=["500", "timeout", "dropped connection"],
)
def test_retries_run_out_with_a_typed_error(
    harness: Callable[..., Harness], failure: Any, error: type[Exception]
) -> None:
    h = harness(failure, max_retries=2)

    with pytest.raises(error) as raised:
        list(h.client.appointment_pages(AppointmentQuery(client="ann@example.org")))

    assert h.client.requests_sent == 3
    assert "/appointments" in str(raised.value)
    assert "ann" not in str(raised.value) and API_KEY not in str(raised.value)


def test_backoff_is_capped_exponential_with_full_jitter(harness: Callable[..., Harness]) -> None:
    h = harness(httpx.Response(502), max_retries=5, backoff_base=0.5, backoff_cap=1.5)

    with pytest.raises(IntakeQServerError):
        h.client.practice_settings()

    ceilings = [0.5, 1.0, 1.5, 1.5, 1.5]
    assert len(h.sleeps) == 5
    assert all(0 <= slept <= ceiling for slept, ceiling in zip(h.sleeps, ceilings, strict=True))
    assert len(set(h.sleeps)) == 5  # jittered, not fixed


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_connection_refused_on_every_try_names_the_host_only() -> None:
    port = free_port()
    sleeps: list[float] = []
    budget = MemoryBudget(minute_limit=100, daily_limit=100)
    with (
        IntakeQClient(
            f"http://127.0.0.1:{port}/api/v1", API_KEY, budget=budget, sleep=sleeps.append
        ) as client,
        pytest.raises(IntakeQUnreachable) as raised,
    ):
        list(client.appointment_pages(AppointmentQuery(client="ann@example.org")))

    assert str(raised.value) == f"could not reach IntakeQ at 127.0.0.1:{port}"
    assert client.requests_sent == 4
    assert budget.usage().day_used == 4


def test_every_try_counts_against_the_budget(harness: Callable[..., Harness]) -> None:
    h = harness(httpx.Response(500), httpx.Response(429), timed_out, ok([]))

    list(h.client.appointment_pages(AppointmentQuery()))

    assert h.client.requests_sent == 4
    assert h.budget.usage().day_used == 4


def test_budget_exhausted_during_retries_propagates_unchanged(
    harness: Callable[..., Harness],
) -> None:
    h = harness(httpx.Response(500), daily_limit=2)

    with pytest.raises(BudgetExhausted):
        h.client.practice_settings()

    assert h.client.requests_sent == 2


# -- errors that are not retried ---------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_fails_at_once(harness: Callable[..., Harness], status: int) -> None:
    h = harness(httpx.Response(status))

    with pytest.raises(IntakeQAuthError, match="IntakeQ rejected the API key"):
        list(h.client.appointment_pages(AppointmentQuery()))

    assert h.client.requests_sent == 1


def test_a_bad_request_fails_at_once(harness: Callable[..., Harness]) -> None:
    h = harness(httpx.Response(400, json={"message": "bad date"}))

    with pytest.raises(IntakeQRequestError) as raised:
        list(h.client.appointment_pages(AppointmentQuery(client="ann@example.org")))

    assert (raised.value.status, raised.value.path) == (400, "/appointments")
    assert h.client.requests_sent == 1


def test_a_body_that_is_not_json_is_a_typed_error(harness: Callable[..., Harness]) -> None:
    h = harness(httpx.Response(200, text="<html>maintenance</html>"))

    with pytest.raises(IntakeQBadResponse, match="not JSON"):
        list(h.client.appointment_pages(AppointmentQuery()))


def test_a_page_the_fast_parser_refuses_is_still_read_as_json_reads_it(
    harness: Callable[..., Harness],
) -> None:
    # Pages go through orjson; a body it refuses but JSON readers accept (NaN, an integer
    # beyond 64 bits, a charset other than UTF-8) must still be read.
    record = appointment(1)
    body = json.dumps([{**record, "Price": float("nan"), "ClientId": 2**70}])
    h = harness(
        httpx.Response(
            200,
            content=body.encode("utf-16"),
            headers={"Content-Type": "application/json; charset=utf-16"},
        )
    )

    [page] = list(h.client.appointment_pages(AppointmentQuery()))

    assert [a.id for a in page] == [record["Id"]]
    assert page[0].client_id == 2**70
    assert "Price" not in page[0].metadata


def test_a_redirect_is_not_followed(harness: Callable[..., Harness]) -> None:
    h = harness(httpx.Response(302, headers={"Location": "https://elsewhere.test/steal"}))

    with pytest.raises(IntakeQRequestError):
        h.client.practice_settings()

    assert [r.url.host for r in h.server.received] == ["intakeq.test"]


def test_a_create_is_not_repeated_after_an_ambiguous_failure(
    harness: Callable[..., Harness],
) -> None:
    h = harness(httpx.Response(502), ok(appointment(1)))

    with pytest.raises(IntakeQServerError):
        h.client.create_appointment(ClientId=5521, UtcDateTime=START_MS)

    assert h.client.requests_sent == 1


def test_a_create_is_retried_when_the_connection_was_refused(
    harness: Callable[..., Harness],
) -> None:
    h = harness(httpx.ConnectError("refused"), ok(appointment(1)))

    created = h.client.create_appointment(ClientId=5521, UtcDateTime=START_MS)

    assert created.id == "appt-1"
    assert json.loads(h.server.received[-1].content) == {"ClientId": 5521, "UtcDateTime": START_MS}


# -- other endpoints -------------------------------------------------------------------------


def test_get_appointment_answers_none_for_404(harness: Callable[..., Harness]) -> None:
    h = harness(httpx.Response(404))
    assert h.client.get_appointment("appt-gone") is None
    assert h.server.received[0].url.path == "/api/v1/appointments/appt-gone"


def test_get_appointment_parses_the_record(harness: Callable[..., Harness]) -> None:
    h = harness(ok(appointment(4)))
    found = h.client.get_appointment("appt-4")
    assert found is not None and found.id == "appt-4" and found.status == "Confirmed"


def test_a_missing_list_endpoint_raises_not_found(harness: Callable[..., Harness]) -> None:
    h = harness(httpx.Response(404))
    with pytest.raises(IntakeQNotFound):
        h.client.practice_settings()


def test_update_sends_the_id_in_the_body(harness: Callable[..., Harness]) -> None:
    h = harness(ok({**appointment(2), "Status": "WaitingConfirmation"}))

    updated = h.client.update_appointment("appt-2", Status="WaitingConfirmation")

    request = h.server.received[0]
    assert (request.method, request.url.path) == ("PUT", "/api/v1/appointments")
    assert json.loads(request.content) == {"Id": "appt-2", "Status": "WaitingConfirmation"}
    assert updated.status == "WaitingConfirmation"


def test_cancel_posts_the_cancellation(harness: Callable[..., Harness]) -> None:
    h = harness(httpx.Response(200))

    h.client.cancel_appointment("appt-2", "patient request")

    request = h.server.received[0]
    assert (request.method, request.url.path) == ("POST", "/api/v1/appointments/cancellation")
    assert json.loads(request.content) == {"AppointmentId": "appt-2", "Reason": "patient request"}


def test_practice_settings_are_parsed(harness: Callable[..., Harness]) -> None:
    h = harness(
        ok(
            {
                "Locations": [{"Id": "1", "Name": "Main", "Address": "1 Main St"}],
                "Services": [{"Id": "svc", "Name": "Follow-up", "Duration": 50, "Price": 0}],
                "Practitioners": [
                    {"Id": "p1", "CompleteName": "Dr. Sweeney", "Email": "dr@clinic.test"},
                    {"Id": "p2", "FirstName": "Ann", "LastName": "Lee"},
                    {"CompleteName": "no id"},
                ],
            }
        )
    )

    settings = h.client.practice_settings()

    assert [(p.id, p.name, p.email) for p in settings.practitioners] == [
        ("p1", "Dr. Sweeney", "dr@clinic.test"),
        ("p2", "Ann Lee", None),
    ]
    assert settings.services[0]["Name"] == "Follow-up"
    assert settings.locations[0]["Name"] == "Main"


@pytest.mark.parametrize("search", ["Ann+O'Neil@example.org", "a b&c=d/é?#%41", None])
def test_each_page_is_requested_at_the_url_httpx_builds_from_its_params(
    harness: Callable[..., Harness], search: str | None
) -> None:
    full = [{"ClientId": n} for n in range(100)]
    h = harness(paged([full, []]))
    query = AppointmentQuery(client=search, start_date=date(2025, 10, 1), status="Confirmed")
    expected_params = [query.params(), {"search": search} if search else {}]

    list(h.client.appointment_pages(query))
    list(h.client.clients(search=search))

    reference = httpx.Client(base_url=BASE_URL)
    expected = [
        reference.build_request("GET", path, params={**params, "page": page}).url
        for path, params in zip(["/appointments", "/clients"], expected_params, strict=True)
        for page in ("1", "2")
    ]
    reference.close()
    assert [str(r.url) for r in h.server.received] == [str(url) for url in expected]
    assert [r.url.params["page"] for r in h.server.received] == ["1", "2", "1", "2"]
    if search:
        assert h.server.received[0].url.params["client"] == search
        assert h.server.received[2].url.params["search"] == search


def test_clients_follow_pages_and_skip_records_without_an_id(
    harness: Callable[..., Harness],
) -> None:
    full = [{"ClientId": n, "Name": f"Client {n}", "Email": f"C{n}@X.org"} for n in range(100)]
    h = harness(paged([full, [{"ClientId": "101", "Name": "Last"}, {"Name": "no id"}]]))

    clients = list(h.client.clients(search="x.org"))

    assert len(clients) == 101
    assert (clients[0].client_id, clients[0].email) == (0, "c0@x.org")
    assert clients[-1].client_id == 101
    assert [dict(r.url.params) for r in h.server.received] == [
        {"search": "x.org", "page": "1"},
        {"search": "x.org", "page": "2"},
    ]
