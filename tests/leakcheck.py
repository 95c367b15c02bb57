"""A check over every log line of the whole test run: no IntakeQ key, no patient data.

The root conftest sends every log record (through the real redacting formatter) to one file,
and e2e tests append their subprocesses' stderr to it; at the end of the session the file is
scanned and the run fails if anything leaked.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

LOG_ENV = "PQSYNC_TEST_SESSION_LOG"
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


def session_log() -> Path | None:
    value = os.environ.get(LOG_ENV)
    return Path(value) if value else None


def append(text: str) -> None:
    """Add a subprocess's output to the session's log."""
    path = session_log()
    if path is not None and text:
        with path.open("a", encoding="utf-8") as handle:
            handle.write(text if text.endswith("\n") else text + "\n")


def find_leaks(lines: Iterable[str], secrets: Iterable[str]) -> list[str]:
    """Lines holding a secret or any email address (every email in a log is a leak)."""
    needles = [s for s in secrets if s]
    leaks = []
    for line in lines:
        if EMAIL.search(line) or any(needle in line for needle in needles):
            leaks.append(line.rstrip("\n"))
    return leaks
