"""What the web tests share besides fixtures: the seeded data's names, a fake clock."""

from __future__ import annotations

import re
import socket
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient

from intakeq_sim import DEMO_PASSWORD, SimulatorServer
from pqsync.bootstrap import App
from pqsync.intakeq.budget import MemoryBudget
from pqsync.intakeq.client import IntakeQClient
from pqsync.settings import Settings, load_settings
from pqsync.web.app import create_app

NOW = datetime(2025, 11, 15, 21, 3, tzinfo=UTC)  # 14:03 in Denver (MST, -07:00)
TODAY = date(2025, 11, 15)
PASSWORD = DEMO_PASSWORD
SECRET_KEY = "test-secret-key-0123456789abcdef"
CRON_SECRET = "test-cron-secret-0123456789abcdef"
WEBHOOK_TOKEN = "test-webhook-token-0123456789abcdef"
METRICS_TOKEN = "test-metrics-token-0123456789abcdef"
INTAKEQ_KEY = "test-intakeq-key-0123456789abcdef"

# Who calls, by the name the tests use.
USERS = {
    "staff_admin": "ops@clinic.example",
    "partner_admin": "beth@firststephouse.org",
    "case_manager": "jordan@firststephouse.org",
    "viewer": "viewer@firststephouse.org",
    "other_org_admin": "hank@harbor.example",
}

OTHER_ORG = {
    "organizations": [
        {"slug": "harbor-house", "name": "Harbor House", "timezone": "America/New_York"}
    ],
    "patients": [
        {"first_name": "Olive", "last_name": "Otter", "email": "olive.otter@harbor.example"}
    ],
    "affiliations": [
        {
            "patient": "olive.otter@harbor.example",
            "organization": "harbor-house",
            "roi_consent": {"status": "active", "expires_on": "2026-06-30"},
        }
    ],
    "partner_users": [
        {
            "email": "hank@harbor.example",
            "name": "Hank Harbor",
            "organization": "harbor-house",
            "role": "partner_admin",
            "password": PASSWORD,
        }
    ],
}


class FakeClock:
    """The app's clock; tests move it instead of sleeping."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass(frozen=True)
class Seed:
    """Ids and tokens of the seeded database (the same in every copy)."""

    tokens: dict[str, str]
    orgs: dict[str, uuid.UUID]  # "own" (First Step House), "other" (Harbor House)
    consenting: uuid.UUID  # own patient, ROI consent active
    expired: uuid.UUID  # own patient, ROI consent expired
    missing: uuid.UUID  # own patient, no ROI consent on file
    other_patient: uuid.UUID  # Harbor House's patient
    names: dict[uuid.UUID, str] = field(default_factory=dict)

    def bearer(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}


def open_client(
    app: App, address: str = "203.0.113.7", *, raise_server_exceptions: bool = True
) -> TestClient:
    """A test client of the HTTP API over `app` (https, so Secure cookies are sent),
    calling from `address`."""
    return TestClient(
        create_app(app),
        base_url="https://testserver",
        client=(address, 50000),
        raise_server_exceptions=raise_server_exceptions,
    )


def sign_in_form(client: TestClient, who: str) -> None:
    """Sign in through the login form (the pages want the session cookie)."""
    form = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token is not None
    answer = client.post(
        "/login",
        data={"email": USERS[who], "password": PASSWORD, "csrf_token": token.group(1)},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text


def wait_for_background(client: TestClient) -> None:
    """Run what the app queued (202 syncs, webhook re-fetches), as a worker would within
    the next minute (a webhook's re-fetch waits for its burst to end)."""
    client.app.state.pqsync.app.jobs.drain(ahead=timedelta(minutes=1))  # type: ignore[attr-defined]


def intakeq_for(sim: SimulatorServer, transport: Any = None) -> IntakeQClient:
    """An IntakeQ client of a test's own simulator, limits out of the way, no sleeping."""
    return IntakeQClient(
        sim.base_url,
        INTAKEQ_KEY,
        budget=MemoryBudget(minute_limit=100_000, daily_limit=100_000),
        transport=transport,
        sleep=lambda _seconds: None,
    )


def unreachable_intakeq() -> IntakeQClient:
    """An IntakeQ client aimed at a closed port, retrying without sleeping."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return IntakeQClient(
        f"http://127.0.0.1:{port}/api/v1",
        INTAKEQ_KEY,
        budget=MemoryBudget(minute_limit=100, daily_limit=100),
        sleep=lambda _seconds: None,
    )


def make_settings(url: str, simulator: SimulatorServer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "PQSYNC_ENV": "test",
        "PQSYNC_DATABASE_URL": url,
        "INTAKEQ_BASE_URL": simulator.base_url,
        "INTAKEQ_API_KEY": INTAKEQ_KEY,
        "INTAKEQ_MINUTE_LIMIT": 100_000,
        "INTAKEQ_DAILY_LIMIT": 100_000,
        "PQSYNC_SECRET_KEY": SECRET_KEY,
        "PQSYNC_CRON_SECRET": CRON_SECRET,
        "PQSYNC_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
        "PQSYNC_METRICS_TOKEN": METRICS_TOKEN,
    }
    values.update(overrides)
    return load_settings(**values)
