"""`pqsync serve --workers 2`: /metrics counts the requests every process answered, not
only those of the process that happens to answer the scrape."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from sqlalchemy import Engine

import leakcheck

TOKEN = "metrics-token-0123456789abcdef0123"
REQUESTS = 24


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def login_count(text: str) -> float:
    pattern = re.compile(
        r'^pqsync_http_requests_total\{method="GET",route="/login",status="200"\} (\S+)$', re.M
    )
    found = pattern.search(text)
    return float(found.group(1)) if found else 0.0


def test_metrics_add_up_the_requests_of_every_web_process(
    engine: Engine, database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("PQSYNC_", "INTAKEQ_"))}
    inherited.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env = {
        **inherited,
        "PQSYNC_DATABASE_URL": database_url,
        "PQSYNC_ENV": "test",
        "PQSYNC_METRICS_TOKEN": TOKEN,
        "HOME": str(tmp_path),
    }
    log = tmp_path / "serve.log"
    base = f"http://127.0.0.1:{port}"
    with log.open("w") as stream:
        server = subprocess.Popen(
            [sys.executable, "-m", "pqsync.cli", "serve", "--port", str(port), "--workers", "2"],
            env=env,
            cwd=tmp_path,
            stdout=stream,
            stderr=stream,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "the server did not start"
            try:
                httpx.get(f"{base}/healthz", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        # Many at once, each on a new connection: both processes take some.
        with ThreadPoolExecutor(max_workers=12) as pool:
            answers = list(
                pool.map(lambda _: httpx.get(f"{base}/login", timeout=30), range(REQUESTS))
            )
        assert all(answer.status_code == 200 for answer in answers)
        scrapes = [
            login_count(
                httpx.get(
                    f"{base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
                ).text
            )
            for _ in range(3)
        ]
    finally:
        server.terminate()
        server.wait(timeout=30)
        leakcheck.append(log.read_text())

    assert scrapes == [REQUESTS] * 3


COUNT_AND_RENDER = """
import sys
from pqsync.web.metrics import Metrics
metrics = Metrics()
for _ in range(int(sys.argv[1])):
    metrics.requests.labels("GET", "/login", "200").inc()
sys.stdout.write(metrics.render().decode())
"""


def test_each_process_answers_the_sum_over_all_processes(tmp_path: Path) -> None:
    # Two web processes as `serve --workers 2` runs them: one shared metrics directory.
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}

    def process(count: int) -> str:
        return subprocess.run(
            [sys.executable, "-c", COUNT_AND_RENDER, str(count)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout

    process(7)
    second = process(5)

    assert login_count(second) == 12
