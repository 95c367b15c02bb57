"""End to end: the `pqsync` command against a simulator process, both on loopback."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

import leakcheck
from pqsync.db.tables import Appointment, Organization, SyncLog
from pqsync.settings import SIMULATOR_API_KEY

pytestmark = pytest.mark.e2e

PQSYNC = [sys.executable, "-m", "pqsync.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def simulator() -> Iterator[str]:
    """`pqsync simulator` as its own process; yields its root URL."""
    port = free_port()
    process = subprocess.Popen(
        [*PQSYNC, "simulator", "--port", str(port), "--minute-limit", "0", "--daily-limit", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    ready = process.stdout.readline()
    assert f"127.0.0.1:{port}" in ready, ready
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    _, errors = process.communicate(timeout=10)
    leakcheck.append(errors)


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*PQSYNC, "--log-level", "INFO", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    leakcheck.append(result.stderr)
    # What a user sees: the JSON log lines are for operators.
    lines = result.stderr.splitlines()
    result.stderr = "\n".join(line for line in lines if not line.startswith("{"))
    return result


@pytest.fixture
def env(simulator: str, database_url: str, tmp_path: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PQSYNC_", "INTAKEQ_"))}
    return {
        **base,
        "PQSYNC_DATABASE_URL": database_url,
        "INTAKEQ_BASE_URL": f"{simulator}/api/v1",
        "INTAKEQ_MINUTE_LIMIT": "1000",
        "HOME": str(tmp_path),
    }


@pytest.fixture
def directory_file(simulator: str, tmp_path: Path) -> Path:
    path = tmp_path / "directory.json"
    path.write_text(httpx.get(f"{simulator}/_sim/directory").text)
    return path


@pytest.fixture
def imported(env: dict[str, str], directory_file: Path) -> dict[str, str]:
    assert run(env, "db", "upgrade").returncode == 0
    done = run(env, "directory", "import", str(directory_file))
    assert done.returncode == 0, done.stderr
    return env


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert SIMULATOR_API_KEY not in result.stderr + result.stdout
    return lines[0]


def test_sync_org_prints_the_summary_and_a_second_run_changes_nothing(
    imported: dict[str, str], simulator: str, engine: Engine
) -> None:
    first = run(imported, "sync", "org", "first-step-house", "--json")
    assert first.returncode == 0, first.stderr
    summary: dict[str, Any] = json.loads(first.stdout)
    assert summary["success"] is True
    truth = httpx.get(f"{simulator}/_sim/info").json()
    assert summary["summary"]["new"] > 100
    assert summary["summary"]["errors"] == 0
    assert summary["patientsProcessed"] == 12
    with Session(engine) as session:
        assert (
            session.scalar(select(func.count()).select_from(Appointment))
            == (summary["summary"]["new"])
        )
    second = run(imported, "sync", "org", "first-step-house", "--json")
    again = json.loads(second.stdout)["summary"]
    assert again == {
        "new": 0,
        "updated": 0,
        "unchanged": summary["summary"]["new"],
        "deleted": 0,
        "errors": 0,
    }
    assert truth["today"]


def test_sync_prints_a_human_summary(imported: dict[str, str]) -> None:
    result = run(imported, "sync", "org", "first-step-house")
    assert result.returncode == 0, result.stderr
    assert re.search(
        r"summary: new \d+, updated 0, unchanged 0, deleted 0, errors 0", result.stdout
    )
    assert "unmapped IntakeQ practitioner" in result.stdout


def test_sync_patient_by_email(imported: dict[str, str]) -> None:
    result = run(imported, "sync", "patient", "ann@firststephouse.org", "--json")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["scope"] == "patient"
    assert body["summary"]["new"] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("sync", "org", "nowhere"), "error: no such organization: nowhere"),
        (("sync", "patient", "ghost@example.org"), "error: no such patient"),
        (
            ("sync", "org", "first-step-house", "--start", "2025-02-30"),
            "error: startDate: '2025-02-30' is not a real date",
        ),
        (
            ("sync", "org", "first-step-house", "--start", "2025-03-01", "--end", "2025-02-01"),
            "error: endDate: must not be before startDate",
        ),
        (
            ("sync", "org", "first-step-house", "--start", "2024-01-01", "--end", "2025-12-31"),
            "more than 400 days",
        ),
        (
            ("sync", "org", "first-step-house", "--start", "9999-12-01", "--end", "9999-12-31"),
            "error: startDate: 9999-12-01 is outside the plausible range 2000-01-01 to 2100-12-31",
        ),
        (
            ("sync", "patient", "ghost@example.org", "--end", "1999-12-31"),
            "error: endDate: 1999-12-31 is outside the plausible range",
        ),
    ],
)
def test_bad_input_gets_one_clear_line_and_writes_nothing(
    imported: dict[str, str], engine: Engine, args: tuple[str, ...], message: str
) -> None:
    line = one_error_line(run(imported, *args))
    assert message in line
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(SyncLog)) == 0


def test_an_invalid_directory_file_is_named_and_nothing_is_written(
    env: dict[str, str], directory_file: Path, engine: Engine
) -> None:
    data = json.loads(directory_file.read_text())
    data["patients"][3]["date_of_birth"] = "1990-02-30"
    directory_file.write_text(json.dumps(data))
    line = one_error_line(run(env, "directory", "import", str(directory_file)))
    assert "patients[3].date_of_birth" in line
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(Organization)) == 0


def test_a_missing_directory_file_is_one_line(env: dict[str, str], tmp_path: Path) -> None:
    line = one_error_line(run(env, "directory", "import", str(tmp_path / "nope.json")))
    assert "cannot read" in line


def test_an_unreachable_intakeq_fails_clearly_and_is_logged(
    imported: dict[str, str], engine: Engine
) -> None:
    closed = free_port()
    env = {**imported, "INTAKEQ_BASE_URL": f"http://127.0.0.1:{closed}/api/v1"}
    line = one_error_line(run(env, "sync", "org", "first-step-house"))
    assert f"could not reach IntakeQ at 127.0.0.1:{closed}" in line
    with Session(engine) as session:
        log = session.scalars(select(SyncLog)).one()
        assert log.status == "failed"
        assert log.error_message and "could not reach" in log.error_message


def test_a_rejected_key_fails_clearly_without_echoing_it(
    imported: dict[str, str], engine: Engine
) -> None:
    env = {**imported, "INTAKEQ_API_KEY": "wrong-key-do-not-print"}
    result = run(env, "sync", "org", "first-step-house")
    line = one_error_line(result)
    assert "IntakeQ rejected the API key" in line
    assert "wrong-key-do-not-print" not in result.stderr + result.stdout


def test_a_real_intakeq_url_needs_a_key(env: dict[str, str]) -> None:
    env = {**env, "INTAKEQ_BASE_URL": "https://intakeq.com/api/v1"}
    assert run(env, "db", "upgrade").returncode == 0
    line = one_error_line(run(env, "sync", "org", "first-step-house"))
    assert "INTAKEQ_API_KEY is not set" in line


def test_a_database_without_schema_says_so(simulator: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PQSYNC_DATABASE_URL": f"sqlite:///{tmp_path}/empty.db",
        "INTAKEQ_BASE_URL": f"{simulator}/api/v1",
    }
    line = one_error_line(run(env, "sync", "org", "first-step-house"))
    assert "pqsync db upgrade" in line


def _children(pid: int) -> list[int]:
    """Live child processes of `pid` (from /proc: Linux, like CI)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def test_serve_with_workers_answers_from_several_processes(imported: dict[str, str]) -> None:
    port = free_port()
    process = subprocess.Popen(
        [*PQSYNC, "serve", "--port", str(port), "--workers", "2"],
        env=imported,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        started = 0
        for line in process.stderr:  # one "Application startup complete" per worker
            leakcheck.append(line)
            started += "Application startup complete" in line
            if started == 2:
                break
        assert started == 2
        assert len(_children(process.pid)) >= 2
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            health = client.get("/healthz")  # no worker runs here: down, and says only that
            assert (health.status_code, health.json()) == (503, {"status": "down"})
            sign_in = client.get("/login")
            assert sign_in.status_code == 200 and "Sign in" in sign_in.text
    finally:
        process.terminate()
        _, errors = process.communicate(timeout=30)
        leakcheck.append(errors)


def test_serve_refuses_zero_workers(imported: dict[str, str]) -> None:
    assert "--workers must be at least 1" in one_error_line(
        run(imported, "serve", "--workers", "0")
    )


def test_verify_says_100_percent_after_a_sync_and_names_a_row_changed_behind_its_back(
    imported: dict[str, str], engine: Engine
) -> None:
    assert run(imported, "sync", "org", "first-step-house").returncode == 0

    accurate = run(imported, "verify", "first-step-house")
    assert accurate.returncode == 0, accurate.stderr
    assert re.search(
        r"accuracy 100\.0% \([\d,]+ appointments compared\): 0 missing, 0 extra, 0 stale",
        accurate.stdout,
    ), accurate.stdout

    with Session(engine) as session, session.begin():
        row = session.scalars(select(Appointment).order_by(Appointment.start_time)).first()
        assert row is not None
        row.start_time = row.start_time.replace(year=row.start_time.year - 1)
        tampered = row.pq_appointment_id
    found = run(imported, "verify", "--all", "--json")
    assert found.returncode == 2, found.stderr
    body = json.loads(found.stdout)
    assert body["status"] == "discrepancies"
    assert [(d["appointmentId"], d["kind"]) for d in body["discrepancies"]] == [(tampered, "stale")]
    assert "start_time" in body["discrepancies"][0]["fields"]
    assert body["accuracyPercent"] < 100.0


def test_verify_needs_one_organisation_or_all(env: dict[str, str]) -> None:
    assert "name one organisation or pass --all" in one_error_line(run(env, "verify"))


STRONG_SECRETS = {
    "PQSYNC_SECRET_KEY": "Kq3v9XzT1mWb7RfYp2LsE8uHn4JcA6dG0iOeVwQk",
    "PQSYNC_CRON_SECRET": "t5Bn8MvR2xLq7WzC1kYh9DfJ3sPa6GuE0oTiNcXr",
    "PQSYNC_WEBHOOK_TOKEN": "Zr4Hd7Qw1NpL9vKx3TbF6mYc2SjG8eUa5iOnWsRk",
    "PQSYNC_METRICS_TOKEN": "Gy2Wm8Lp5ZtC3nXq9RkB1vHd7JsF4aEu6oTiMcNb",
}


def production_env(tmp_path: Path, **secrets: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PQSYNC_", "INTAKEQ_"))}
    return {
        **base,
        "PQSYNC_ENV": "production",
        "PQSYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'pqsync.db'}",
        "PQSYNC_QUEUE_URL": f"sqlite:///{tmp_path / 'queue.db'}",
        "PQSYNC_BASE_URL": "https://dash.clinic.example",
        "INTAKEQ_API_KEY": "an-intakeq-key",
        "HOME": str(tmp_path),
        **{**STRONG_SECRETS, **secrets},
    }


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["worker"]])
@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("PQSYNC_SECRET_KEY", "a" * 32, "too predictable"),
        ("PQSYNC_CRON_SECRET", "abab" * 10, "too predictable"),
        ("PQSYNC_WEBHOOK_TOKEN", "0000000000111111111122222222223333", "too predictable"),
        ("PQSYNC_METRICS_TOKEN", "passwordpasswordpasswordpassword", "too predictable"),
    ],
)
def test_production_refuses_a_low_entropy_secret_naming_only_the_variable(
    tmp_path: Path, command: list[str], variable: str, value: str, reason: str
) -> None:
    result = run(production_env(tmp_path, **{variable: value}), *command)

    line = one_error_line(result)
    assert variable in line and reason in line, line
    assert value not in result.stderr + result.stdout


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["worker"]])
@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("PQSYNC_SECRET_KEY", "PQSYNC_CRON_SECRET"),
        ("PQSYNC_WEBHOOK_TOKEN", "PQSYNC_METRICS_TOKEN"),
        ("PQSYNC_SECRET_KEY", "PQSYNC_METRICS_TOKEN"),
    ],
)
def test_production_refuses_one_value_for_two_secrets(
    tmp_path: Path, command: list[str], first: str, second: str
) -> None:
    shared = STRONG_SECRETS[first]
    result = run(production_env(tmp_path, **{second: shared}), *command)

    line = one_error_line(result)
    assert first in line and second in line and "same value" in line, line
    assert shared not in result.stderr + result.stdout


def test_production_with_strong_distinct_secrets_gets_past_the_secret_check(
    tmp_path: Path,
) -> None:
    # No schema yet: the start stops there, after the secrets were accepted.
    line = one_error_line(run(production_env(tmp_path), "worker"))

    assert "SECRET" not in line and "TOKEN" not in line, line
