"""Shared set-up for the benchmarks: fresh databases, the simulator, our App.

Benchmarks print their figures and the baseline they compare against in the same run;
they are not tests and assert nothing about time.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from pqsync.bootstrap import App
from pqsync.db.engine import make_engine
from pqsync.db.migrate import upgrade
from pqsync.logging import configure_logging
from pqsync.services.directory import DirectoryFile, import_directory
from pqsync.settings import Settings

configure_logging(level="WARNING")

POSTGRES_URL = os.environ.get(
    "PQSYNC_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@contextmanager
def fresh_database(kind: str) -> Iterator[str]:
    """A new, migrated, empty database; dropped afterwards."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            url = f"sqlite:///{folder}/bench.db"
            engine = make_engine(url)
            upgrade(engine)
            engine.dispose()
            yield url
        return
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    name = f"pqsync_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    try:
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def make_app(engine: Engine, base_url: str, **settings: Any) -> App:
    values: dict[str, Any] = {
        "INTAKEQ_BASE_URL": base_url,
        "INTAKEQ_MINUTE_LIMIT": 1_000_000,
        "INTAKEQ_DAILY_LIMIT": 1_000_000,
    }
    values.update(settings)
    return App(settings=Settings(**values), engine=engine)


def import_demo_directory(engine: Engine, directory: dict[str, Any]) -> None:
    # Benchmarks need no logins: skip the users (argon2 hashing is deliberately slow).
    directory = {**directory, "partner_users": []}
    import_directory(engine, DirectoryFile.model_validate(directory))


@contextmanager
def seeded_app(dataset: Any, clock: Any) -> Iterator[App]:
    """An in-process simulator of `dataset` (no limits) and our App on a fresh SQLite
    database holding the matching directory; both on `clock`."""
    from intakeq_sim import SimConfig, SimulatorServer, demo_directory

    config = SimConfig(minute_limit=None, daily_limit=None)
    with (
        SimulatorServer(dataset, clock=clock, config=config) as sim,
        fresh_database("sqlite") as url,
    ):
        engine = make_engine(url)
        import_demo_directory(engine, demo_directory(dataset))
        app = make_app(engine, sim.base_url)
        app.clock = clock
        try:
            yield app
        finally:
            app.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def simulator_process(*args: str) -> Iterator[str]:
    """`pqsync simulator` in its own process (so our process's memory is ours alone)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "pqsync.cli", "simulator", "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        process.stdout.readline()
        root = f"http://127.0.0.1:{port}"
        wait_until_up(f"{root}/_sim/info")
        yield root
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()


def wait_until_up(url: str, tries: int = 300) -> None:
    """Poll `url` until it answers 2xx, or 503 (`/healthz` while no worker runs: a process
    just started)."""
    for _ in range(tries):
        try:
            if httpx.get(url, timeout=5).status_code in (200, 503):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)


def directory_of(root: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(httpx.get(f"{root}/_sim/directory", timeout=60).text)
    return body


def row(*cells: object, widths: tuple[int, ...] = (44, 14, 14, 14)) -> str:
    out = []
    for cell, width in zip(cells, widths, strict=False):
        out.append(str(cell).ljust(width) if cell is cells[0] else str(cell).rjust(width))
    return "".join(out)


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
