"""Upgrades: the web app and the worker refuse to start on a schema behind or ahead of this
version's head; `pqsync db current` and `db downgrade` say and move where it is."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from pqsync.cli import cli
from pqsync.db.migrate import downgrade, head_revision

PQSYNC = [sys.executable, "-m", "pqsync.cli"]


def _env(database_url: str) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("PQSYNC_", "INTAKEQ_"))}
    return {**inherited, "PQSYNC_DATABASE_URL": database_url, "PQSYNC_ENV": "test"}


def _start(command: list[str], database_url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PQSYNC, *command],
        env=_env(database_url),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["worker"]])
def test_the_app_refuses_a_schema_behind_head(
    engine: Engine, database_url: str, tmp_path: Path, command: list[str]
) -> None:
    downgrade(engine, "0004")

    result = _start(command, database_url, tmp_path)

    assert result.returncode == 1
    assert "behind this version of pqsync" in result.stderr
    assert "pqsync db upgrade" in result.stderr


def test_the_worker_refuses_a_schema_ahead_of_head(
    engine: Engine, database_url: str, tmp_path: Path
) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))

    result = _start(["worker"], database_url, tmp_path)

    assert result.returncode == 1
    assert "newer than this version of pqsync knows" in result.stderr


def test_db_current_and_downgrade_say_and_move_where_the_schema_is(
    engine: Engine, database_url: str
) -> None:
    runner = CliRunner(env={"PQSYNC_DATABASE_URL": database_url, "PQSYNC_ENV": "test"})
    head = head_revision()

    at_head = runner.invoke(cli, ["db", "current", "--check"])
    unconfirmed = runner.invoke(cli, ["db", "downgrade", "0004"])
    down = runner.invoke(cli, ["db", "downgrade", "0004", "--yes"])
    behind = runner.invoke(cli, ["db", "current", "--check"])
    up = runner.invoke(cli, ["db", "upgrade"])
    again = runner.invoke(cli, ["db", "current", "--check"])

    assert at_head.exit_code == 0 and f"schema {head}" in at_head.stdout
    assert unconfirmed.exit_code == 1 and "--yes" in unconfirmed.stderr
    assert down.exit_code == 0 and "now at 0004" in down.stdout
    assert behind.exit_code == 1 and "behind" in behind.stdout
    assert up.exit_code == 0
    assert again.exit_code == 0 and "up to date" in again.stdout
