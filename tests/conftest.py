"""Shared fixtures: a real, migrated database per test (SQLite or PostgreSQL).

`PQSYNC_TEST_DB=postgresql` runs the database tests on PostgreSQL at
`PQSYNC_TEST_POSTGRES_URL`; tests using the `engine` fixture are marked `db`.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from hypothesis import settings
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

import leakcheck
from intakeq_sim import DEMO_PASSWORD, build_dataset
from pqsync.db.engine import make_engine
from pqsync.db.migrate import upgrade
from pqsync.logging import configure_logging, make_formatter
from pqsync.settings import SIMULATOR_API_KEY

# Tests never assert on wall time: Hypothesis's per-example deadline (200 ms) is one such
# assertion, and a cold first example on a busy CI machine fails it.
settings.register_profile("pqsync", deadline=None)
settings.load_profile("pqsync")

TEST_DB = os.environ.get("PQSYNC_TEST_DB", "sqlite")
POSTGRES_URL = os.environ.get(
    "PQSYNC_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
DB_FIXTURES = {"engine", "database_url"}
_LOG_HANDLER = pytest.StashKey[logging.Handler]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if DB_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.db)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "db: uses a real database (run on SQLite and PostgreSQL)")
    # Every log line of the run goes through the real redacting formatter into one file.
    handle, name = tempfile.mkstemp(prefix="pqsync-test-log-", suffix=".jsonl")
    os.close(handle)
    os.environ[leakcheck.LOG_ENV] = name
    configure_logging(level="DEBUG", stream=io.StringIO())
    handler = logging.FileHandler(name, encoding="utf-8")
    handler.setFormatter(make_formatter())
    handler.setLevel(logging.DEBUG)
    logging.getLogger().addHandler(handler)
    config.stash[_LOG_HANDLER] = handler


def _patient_secrets() -> list[str]:
    """The simulator's clients' names (emails are caught by pattern) and the keys."""
    dataset = build_dataset(1, date(2025, 10, 24))
    names = [c.name for c in dataset.clients]
    return [SIMULATOR_API_KEY, DEMO_PASSWORD, "wrong-key-do-not-print", *names]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    handler = session.config.stash.get(_LOG_HANDLER, None)
    path = leakcheck.session_log()
    if handler is None or path is None:
        return
    logging.getLogger().removeHandler(handler)
    handler.close()
    with path.open(encoding="utf-8") as lines:
        leaks = leakcheck.find_leaks(lines, _patient_secrets())
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if leaks:
        if reporter is not None:
            reporter.write_line(
                f"LEAK CHECK FAILED: {len(leaks)} log line(s) hold a key or "
                f"patient data (log kept at {path}):",
                red=True,
            )
            for line in leaks[:20]:
                reporter.write_line(f"  {line[:300]}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    else:
        if reporter is not None:
            size = path.stat().st_size
            reporter.write_line(
                f"leak check: {size} bytes of logs scanned, no key or patient data found"
            )
        path.unlink()


def _postgres_admin() -> Engine:
    return create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")


class _PostgresDatabases:
    """A migrated template database, copied for every test (fast and isolated)."""

    def __init__(self) -> None:
        self.admin = _postgres_admin()
        try:
            with self.admin.connect() as conn:
                conn.execute(text("select 1"))
        except Exception as exc:  # pragma: no cover - environment dependent
            message = f"PostgreSQL is not reachable at {make_url(POSTGRES_URL).host}: {exc}"
            if os.environ.get("CI") == "true":
                pytest.fail(message)
            pytest.skip(message)
        self.template = f"pqsync_tmpl_{uuid.uuid4().hex[:10]}"
        self.created: list[str] = []
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.template}"'))
        template_engine = make_engine(self.url(self.template))
        upgrade(template_engine)
        template_engine.dispose()

    def url(self, name: str) -> str:
        return make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)

    def new(self) -> str:
        name = f"pqsync_test_{uuid.uuid4().hex[:12]}"
        with self.admin.connect() as conn:
            conn.execute(
                text(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}" STRATEGY FILE_COPY')
            )
        self.created.append(name)
        return self.url(name)

    def drop(self, url: str) -> None:
        name = make_url(url).database
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def close(self) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)'))
        self.admin.dispose()


@pytest.fixture(scope="session")
def _database_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    if TEST_DB == "postgresql":
        databases = _PostgresDatabases()
        yield databases
        databases.close()
    else:
        path = tmp_path_factory.mktemp("template") / "template.db"
        engine = make_engine(f"sqlite:///{path}")
        upgrade(engine)
        engine.dispose()
        yield path


@pytest.fixture
def database_url(_database_template: object, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh, migrated database of its own for this test."""
    if isinstance(_database_template, _PostgresDatabases):
        url = _database_template.new()
        yield url
        _database_template.drop(url)
    else:
        assert isinstance(_database_template, Path)
        path = tmp_path / "pqsync.db"
        shutil.copy(_database_template, path)
        yield f"sqlite:///{path}"


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()
