"""No answer, error or log line holds the IntakeQ key, a password, a token or a secret."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable, Iterator

import httpx2
import pytest
import structlog
from web_support import (
    CRON_SECRET,
    INTAKEQ_KEY,
    METRICS_TOKEN,
    PASSWORD,
    SECRET_KEY,
    USERS,
    WEBHOOK_TOKEN,
    FakeClock,
    Seed,
    open_client,
    unreachable_intakeq,
    wait_for_background,
)

from pqsync.bootstrap import App
from pqsync.logging import configure_logging

PATIENTS = "/api/partner-dashboard/patients"


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """Every log record of the test through the app's real logging setup (structlog and
    stdlib, redacting formatter) into a buffer; the previous setup is restored afterwards."""
    buffer = io.StringIO()
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    saved_structlog = structlog.get_config()
    configure_logging(level="DEBUG", stream=buffer)
    # The test client's own logger prints every URL it requests; it is not the app.
    test_client_log = logging.getLogger("httpx2")
    saved_client_level = test_client_log.level
    test_client_log.setLevel(logging.WARNING)
    try:
        yield buffer
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        structlog.configure(**saved_structlog)
        test_client_log.setLevel(saved_client_level)


def test_no_response_or_log_line_holds_a_secret(
    build_app: Callable[..., App], seed: Seed, captured_logs: io.StringIO, clock: FakeClock
) -> None:
    answers: list[httpx2.Response] = []
    staff, partner = seed.bearer("staff_admin"), seed.bearer("case_manager")
    with open_client(build_app()) as client:
        answers.append(
            client.post(
                "/api/auth/login", json={"email": USERS["viewer"], "password": "x" + PASSWORD}
            )
        )
        answers.append(
            client.post(
                "/api/auth/login",
                json={"email": USERS["viewer"], "password": PASSWORD, "extra": PASSWORD},
            )
        )
        answers.append(
            client.post("/api/auth/login", json={"email": USERS["viewer"], "password": PASSWORD})
        )
        answers.append(client.get("/api/auth/me"))
        answers.append(client.post(f"{PATIENTS}/{seed.consenting}/sync", headers=partner))
        answers.append(
            client.post(
                f"{PATIENTS}/{seed.expired}/sync",
                headers=partner,
                json={"dateRange": {"startDate": "2025-13-01", "endDate": "x"}},
            )
        )
        answers.append(
            client.post(
                f"/api/partner-dashboard/organizations/{seed.orgs['own']}/sync-all-patients",
                headers={**staff, "Prefer": "respond-async"},
            )
        )
        wait_for_background(client)
        answers.append(client.get(answers[-1].headers["Location"], headers=staff))
        answers.append(client.get(PATIENTS, headers=partner))
        answers.append(client.get(f"{PATIENTS}/{seed.expired}/appointments", headers=partner))
        answers.append(
            client.post(f"{PATIENTS}/{seed.expired}/sync", headers=seed.bearer("viewer"))
        )
        answers.append(client.get(f"{PATIENTS}/{seed.consenting}/appointments", headers=partner))
        answers.append(client.get(f"{PATIENTS}/{seed.consenting}/sync-history", headers=partner))
        answers.append(
            client.post(
                "/api/cron/sync-practiceq-appointments",
                headers={"Authorization": f"Bearer {CRON_SECRET}x"},
            )
        )
        answers.append(
            client.post(
                "/api/cron/sync-practiceq-appointments",
                headers={"Authorization": f"Bearer {CRON_SECRET}"},
            )
        )
        answers.append(
            client.post(
                f"/api/webhooks/practiceq/appointments?token={WEBHOOK_TOKEN}",
                json={"EventType": "AppointmentCreated", "ClientId": 1},
            )
        )
        answers.append(
            client.post(f"/api/webhooks/practiceq/appointments?token={WEBHOOK_TOKEN}x", json={})
        )
        answers.append(client.get(f"/api/partner-dashboard/nothing-here?token={WEBHOOK_TOKEN}"))
        answers.append(client.get("/metrics"))
        answers.append(client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}))
        wait_for_background(client)
    clock.advance(seconds=61)  # within the minute, a patient's last sync answers again
    with open_client(build_app(intakeq=unreachable_intakeq())) as client:
        answers.append(client.post(f"{PATIENTS}/{seed.consenting}/sync", headers=staff))
    with open_client(build_app(INTAKEQ_DAILY_LIMIT=1)) as client:
        for _ in range(2):
            clock.advance(seconds=61)
            answers.append(client.post(f"{PATIENTS}/{seed.consenting}/sync", headers=staff))

    secrets = [
        INTAKEQ_KEY,
        PASSWORD,
        CRON_SECRET,
        WEBHOOK_TOKEN,
        SECRET_KEY,
        METRICS_TOKEN,
        *seed.tokens.values(),
    ]
    assert {a.status_code for a in answers} >= {200, 202, 401, 403, 404, 422, 429, 502}
    for answer in answers:
        seen = answer.text + "\n".join(f"{k}: {v}" for k, v in answer.headers.items())
        for secret in secrets:
            assert secret not in seen, f"{answer.request.url.path} answered a secret"
    logs = captured_logs.getvalue()
    assert "http.request" in logs and "sync.finished" in logs and "intakeq.request" in logs
    for line in logs.splitlines():
        for secret in secrets:
            assert secret not in line, line
        assert not re.search(r"[\w.+-]+@[\w-]+\.[\w.-]+", line), line
