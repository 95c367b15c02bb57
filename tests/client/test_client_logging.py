"""Logs never carry patient identifiers, emails or the API key."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import structlog

from pqsync.intakeq.budget import MemoryBudget
from pqsync.intakeq.client import IntakeQClient
from pqsync.intakeq.errors import IntakeQServerError
from pqsync.intakeq.models import AppointmentQuery
from pqsync.logging import configure_logging, get_logger, redact_patient_data

API_KEY = "secret-key-123"


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """configure_logging into a buffer; the global logging setup is restored afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    saved_structlog = structlog.get_config()
    saved_levels = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    stream = io.StringIO()
    configure_logging(level="DEBUG", stream=stream)
    yield stream
    structlog.configure(**saved_structlog)
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for name, level in saved_levels.items():
        logging.getLogger(name).setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_sensitive_keys_are_masked_at_any_depth_in_any_case() -> None:
    event = {
        "event": "sync",
        "Client_Email": "a@b.org",
        "X-Auth-Key": API_KEY,
        "params": {"client": "ann", "page": 2, "nested": [{"FirstName": "Ann", "ok": 1}]},
        "ClientDateOfBirth": "1990-01-15",
        "count": 3,
    }

    out = redact_patient_data(None, "info", event)

    assert out == {
        "event": "sync",
        "Client_Email": "[redacted]",
        "X-Auth-Key": "[redacted]",
        "params": {
            "client": "[redacted]",
            "page": 2,
            "nested": [{"FirstName": "[redacted]", "ok": 1}],
        },
        "ClientDateOfBirth": "[redacted]",
        "count": 3,
    }


def test_email_addresses_inside_strings_are_masked_even_url_encoded() -> None:
    out = redact_patient_data(
        None,
        "info",
        {
            "event": "GET /appointments?client=case.manager%2Baustin%40org.org",
            "note": "ask Ann.Lee+x@Clinic.org",
        },
    )
    assert out["event"] == "GET /appointments?client=[redacted email]"
    assert out["note"] == "ask [redacted email]"


def test_the_client_logs_one_redacted_line_per_try(log_output: io.StringIO) -> None:
    outcomes = iter([httpx.Response(500), httpx.Response(200, json=[])])
    budget = MemoryBudget(minute_limit=100, daily_limit=100)
    with IntakeQClient(
        "https://intakeq.test/api/v1",
        API_KEY,
        budget=budget,
        transport=httpx.MockTransport(lambda request: next(outcomes)),
        sleep=lambda seconds: None,
    ) as client:
        list(
            client.appointment_pages(
                AppointmentQuery(client="ann.lee@example.org", status="Confirmed")
            )
        )

    output = log_output.getvalue()
    assert "ann" not in output.lower()
    assert "example.org" not in output
    assert API_KEY not in output
    tries = [line for line in lines(log_output) if line["event"] == "intakeq.request"]
    assert [(t["try"], t["status"]) for t in tries] == [(1, 500), (2, 200)]
    assert tries[0]["level"] == "warning" and "retry_in_s" in tries[0]
    assert tries[1]["params"] == {"client": "[redacted]", "status": "Confirmed", "page": "1"}
    assert tries[1]["path"] == "/appointments"
    assert {"timestamp", "level", "event", "duration_ms", "method"} <= tries[1].keys()


def test_errors_name_the_path_only(log_output: io.StringIO) -> None:
    budget = MemoryBudget(minute_limit=100, daily_limit=100)
    with (
        IntakeQClient(
            "https://intakeq.test/api/v1",
            API_KEY,
            budget=budget,
            transport=httpx.MockTransport(lambda request: httpx.Response(503)),
            sleep=lambda seconds: None,
            max_retries=1,
        ) as client,
        pytest.raises(IntakeQServerError) as raised,
    ):
        list(client.appointment_pages(AppointmentQuery(client="ann.lee@example.org")))

    get_logger("pqsync.test").error("sync failed", error=str(raised.value))
    assert str(raised.value) == "IntakeQ answered HTTP 503 for /appointments after retries"
    assert "ann" not in log_output.getvalue().lower()


def test_stdlib_records_are_redacted_and_httpx_is_quiet(log_output: io.StringIO) -> None:
    logging.getLogger("uvicorn.error").warning("client %s failed", "ann.lee@example.org")
    logging.getLogger("httpx").info("HTTP Request: GET https://x/appointments?client=ann%40x.org")

    [record] = lines(log_output)
    assert record["event"] == "client [redacted email] failed"
    assert record["logger"] == "uvicorn.error" and record["level"] == "warning"


def test_configuring_twice_does_not_duplicate_lines(log_output: io.StringIO) -> None:
    configure_logging(stream=log_output)
    get_logger("pqsync.test").info("once")
    assert [line["event"] for line in lines(log_output)] == ["once"]
