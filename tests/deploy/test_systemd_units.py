"""The systemd units in deploy/systemd: `systemd-analyze verify` finds nothing wrong (with
the install path pointed at this checkout's pqsync), and every command they run exists."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).parents[2] / "deploy" / "systemd"
INSTALLED = "/opt/pqsync/.venv/bin/pqsync"
PQSYNC = Path(sys.executable).parent / "pqsync"


def _analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("systemd-analyze is missing (.ci/run installs systemd)")
        pytest.skip("systemd-analyze is not installed: the units are not checked here")
    return found


@pytest.mark.parametrize("unit", ["pqsync-web.service", "pqsync-worker.service"])
def test_the_unit_verifies_clean(unit: str, tmp_path: Path) -> None:
    analyze = _analyze()
    text = (UNITS / unit).read_text(encoding="utf-8")
    assert INSTALLED in text
    copy = tmp_path / unit
    copy.write_text(text.replace(INSTALLED, str(PQSYNC)), encoding="utf-8")

    result = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )

    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


@pytest.mark.parametrize("unit", ["pqsync-web.service", "pqsync-worker.service"])
def test_every_command_the_unit_runs_is_a_pqsync_command(unit: str) -> None:
    lines = (UNITS / unit).read_text(encoding="utf-8").splitlines()
    commands = [
        shlex.split(line.split("=", 1)[1])
        for line in lines
        if line.startswith(("ExecStart=", "ExecStartPre="))
    ]
    assert commands
    for command in commands:
        assert command[0] == INSTALLED
        helped = subprocess.run(
            [str(PQSYNC), *command[1:], "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert helped.returncode == 0, f"{command}: {helped.stderr[-300:]}"
