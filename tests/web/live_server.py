"""`pqsync serve` as its own process on loopback, over a copy of the seeded database."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from web_support import CRON_SECRET, INTAKEQ_KEY, SECRET_KEY, WEBHOOK_TOKEN

import leakcheck


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_env(database_url: str, intakeq_url: str, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PQSYNC_", "INTAKEQ_"))}
    return {
        **base,
        "PQSYNC_ENV": "test",
        "PQSYNC_DATABASE_URL": database_url,
        "INTAKEQ_BASE_URL": intakeq_url,
        "INTAKEQ_API_KEY": INTAKEQ_KEY,
        "PQSYNC_SECRET_KEY": SECRET_KEY,
        "PQSYNC_CRON_SECRET": CRON_SECRET,
        "PQSYNC_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
        **extra,
    }


def rss_bytes(pid: int) -> int:
    """The resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")


class LiveServer:
    def __init__(self, process: subprocess.Popen[str], url: str) -> None:
        self.process = process
        self.url = url
        self.log = ""  # the server's stderr, once it has stopped

    @property
    def rss(self) -> int:
        return rss_bytes(self.process.pid)


@contextmanager
def live_server(env: dict[str, str]) -> Iterator[LiveServer]:
    """Start `pqsync serve` on a free loopback port; wait until /healthz answers."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "pqsync.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, "the server exited"
            try:
                # Up, or down only for want of a worker (none runs here): it answers.
                if httpx.get(f"{url}/healthz", timeout=5).status_code in (200, 503):
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        live = LiveServer(process, url)
        yield live
    finally:
        process.terminate()
        _, errors = process.communicate(timeout=20)
        leakcheck.append(errors)
        if "live" in locals():
            live.log = errors
