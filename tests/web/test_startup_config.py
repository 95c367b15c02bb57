"""Configuration checked at start: a malformed SMTP URL or a missing IntakeQ key in
production stops the web app and the worker with one line naming the variable (never its
value); a night that cannot start gives its claim back and raises one alert."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pqsync.bootstrap import App
from pqsync.db.tables import Alert, NightlyClaim, SyncLog
from pqsync.settings import load_settings
from pqsync.startup_checks import configuration_problems

PQSYNC = [sys.executable, "-m", "pqsync.cli"]
SECRET = "a-production-secret-0123456789abcdef"
SMTP_PASSWORD = "smtp-pass-do-not-print"


def production(tmp_path: Path, **overrides: str) -> dict[str, str]:
    values = {
        "PQSYNC_ENV": "production",
        "PQSYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'pqsync.db'}",
        "PQSYNC_QUEUE_URL": f"sqlite:///{tmp_path / 'queue.db'}",
        "PQSYNC_BASE_URL": "https://dash.clinic.example",
        "INTAKEQ_API_KEY": "an-intakeq-key",
        "PQSYNC_SECRET_KEY": SECRET,
        "PQSYNC_CRON_SECRET": f"cron-{SECRET}",
        "PQSYNC_WEBHOOK_TOKEN": f"webhook-{SECRET}",
        "PQSYNC_SMTP_URL": "smtp://mail.clinic.example:587?starttls=1",
        "PQSYNC_ALERT_EMAILS": "oncall@clinic.example",
    }
    return {**values, **overrides}


def problems(env: dict[str, str]) -> list[str]:
    return configuration_problems(load_settings(**env))


def test_a_good_production_configuration_has_no_problems(tmp_path: Path) -> None:
    assert problems(production(tmp_path)) == []


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"PQSYNC_SMTP_URL": f"smtp//ops:{SMTP_PASSWORD}@mail"}, "PQSYNC_SMTP_URL is malformed"),
        ({"PQSYNC_SMTP_URL": f"smtp://ops:{SMTP_PASSWORD}@mail:port"}, "PQSYNC_SMTP_URL is"),
        ({"INTAKEQ_API_KEY": ""}, "INTAKEQ_API_KEY is not set"),
        ({"INTAKEQ_BASE_URL": "http://intakeq.com/api/v1"}, "INTAKEQ_BASE_URL must be an https"),
        ({"PQSYNC_BASE_URL": "http://dash.clinic.example"}, "PQSYNC_BASE_URL must be an https"),
        ({"PQSYNC_QUEUE_URL": "amqp://queue"}, "PQSYNC_QUEUE_URL must start with"),
        ({"PQSYNC_DATABASE_URL": "sqlite:///var/pqsync.db"}, "relative SQLite path"),
        ({"PQSYNC_QUEUE_URL": "memory://"}, "refused in production"),
    ],
)
def test_each_production_mistake_is_named_without_its_value(
    tmp_path: Path, override: dict[str, str], message: str
) -> None:
    found = problems(production(tmp_path, **override))

    assert any(message in line for line in found), found
    assert SMTP_PASSWORD not in " ".join(found)


@pytest.mark.parametrize("command", [["worker"], ["serve", "--port", "0"]])
@pytest.mark.parametrize(
    "override",
    [{"PQSYNC_SMTP_URL": f"smtp//ops:{SMTP_PASSWORD}@mail"}, {"INTAKEQ_API_KEY": ""}],
    ids=["bad-smtp-url", "missing-key"],
)
def test_web_and_worker_refuse_to_start(
    tmp_path: Path, command: list[str], override: dict[str, str]
) -> None:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("PQSYNC_", "INTAKEQ_"))}
    env = {**inherited, **production(tmp_path, **override), "HOME": str(tmp_path)}

    result = subprocess.run(
        [*PQSYNC, *command], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 1
    assert result.stderr.startswith("error: the ")
    assert "cannot start" in result.stderr
    assert SMTP_PASSWORD not in result.stderr


def test_a_night_that_cannot_start_gives_its_claim_back_and_alerts_once(
    build_app: Callable[..., App],
) -> None:
    # No key and a real IntakeQ address: the sync cannot be built.
    app = build_app(INTAKEQ_API_KEY="", INTAKEQ_BASE_URL="https://intakeq.invalid/api/v1")

    app.jobs.tick()
    app.jobs.tick()

    with Session(app.engine) as session:
        claims = session.scalar(select(func.count()).select_from(NightlyClaim))
        runs = session.scalar(select(func.count()).select_from(SyncLog))
        # (Past 06:00, the nights are also reported missed, one per organisation.)
        alerts = session.scalars(select(Alert).where(Alert.kind != "missed")).all()
    assert claims == 0  # given back: the next tick claims it again
    assert runs == 0
    assert [(a.kind, a.subject) for a in alerts] == [
        ("failure", "pqsync: the nightly sync cannot start")
    ]
    assert "INTAKEQ_API_KEY is not set" in alerts[0].body
