"""Production refuses weak secrets (naming the variable, never its value); an empty token
never opens anything; /metrics is behind its own token."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from web_support import CRON_SECRET, METRICS_TOKEN, SECRET_KEY, WEBHOOK_TOKEN, open_client

from pqsync.bootstrap import App
from pqsync.settings import DEV_SECRET, SettingsError, load_settings

STRONG = {
    "PQSYNC_SECRET_KEY": SECRET_KEY,
    "PQSYNC_CRON_SECRET": CRON_SECRET,
    "PQSYNC_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
}
WEBHOOK = "/api/webhooks/practiceq/appointments"
CRON = "/api/cron/sync-practiceq-appointments"


def production(**values: Any) -> None:
    load_settings(PQSYNC_ENV="production", **{**STRONG, **values})


def test_production_starts_with_strong_secrets() -> None:
    production()
    production(PQSYNC_METRICS_TOKEN=METRICS_TOKEN)


@pytest.mark.parametrize("variable", [*STRONG, "PQSYNC_METRICS_TOKEN"])
@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "is empty"),
        ("short-but-not-empty", "shorter than 32"),
        (DEV_SECRET, "development default"),
        (" " * 40, "is empty"),
    ],
)
def test_production_refuses_a_weak_secret_naming_the_variable(
    variable: str, value: str, reason: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        production(**{variable: value})

    message = str(refused.value)
    assert variable in message and reason in message
    if value.strip():
        assert value not in message


@pytest.mark.parametrize("variable", list(STRONG))
def test_production_refuses_a_missing_secret(variable: str) -> None:
    values = {k: v for k, v in STRONG.items() if k != variable}
    with pytest.raises(SettingsError, match=f"{variable} is not set"):
        load_settings(PQSYNC_ENV="production", **values)


def test_the_server_does_not_start_in_production_with_an_empty_secret(tmp_path: Any) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PQSYNC_", "INTAKEQ_"))}
    env = {
        **base,
        **STRONG,
        "PQSYNC_ENV": "production",
        "PQSYNC_CRON_SECRET": "",
        "PQSYNC_DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite",
        "HOME": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "-m", "pqsync.cli", "serve", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "PQSYNC_CRON_SECRET" in lines[0], result.stderr
    assert SECRET_KEY not in result.stderr and WEBHOOK_TOKEN not in result.stderr


@pytest.fixture
def empty_tokens(build_app: Callable[..., App]) -> TestClient:
    app = build_app(PQSYNC_WEBHOOK_TOKEN="", PQSYNC_CRON_SECRET="", PQSYNC_METRICS_TOKEN="")
    return open_client(app)


def test_an_empty_webhook_token_matches_nothing(empty_tokens: TestClient) -> None:
    with empty_tokens as client:
        for url in (f"{WEBHOOK}?token=", WEBHOOK):
            response = client.post(url, json={"EventType": "AppointmentCreated", "ClientId": 1})
            assert response.status_code == 404


def test_an_empty_cron_secret_matches_nothing(empty_tokens: TestClient) -> None:
    with empty_tokens as client:
        for headers in ({"Authorization": "Bearer "}, {"Authorization": "Bearer"}, {}):
            assert client.post(CRON, headers=headers).status_code == 401


def test_an_empty_metrics_token_leaves_metrics_off(empty_tokens: TestClient) -> None:
    with empty_tokens as client:
        assert client.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 404


def test_metrics_need_their_token(client: TestClient) -> None:
    assert client.get("/metrics").status_code == 401
    assert (
        client.get("/metrics", headers={"Authorization": f"Bearer {CRON_SECRET}"}).status_code
        == 401
    )
    answer = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert answer.status_code == 200 and "pqsync_http_requests_total" in answer.text


def test_metrics_are_off_without_a_token(build_app: Callable[..., App]) -> None:
    with open_client(build_app(PQSYNC_METRICS_TOKEN=None)) as client:
        answer = client.get("/metrics", headers={"Authorization": "Bearer anything"})
    assert answer.status_code == 404
