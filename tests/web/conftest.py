"""Fixtures for the HTTP API: a seeded database, the IntakeQ simulator, an app per test.

The seeded database (First Step House from the simulator's demo directory, plus Harbor
House, a second organisation) is built once per session and copied for each test, so
password hashing and imports are paid once. Bearer tokens are issued at seeding time.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session
from web_support import (
    INTAKEQ_KEY,
    NOW,
    OTHER_ORG,
    PASSWORD,
    TODAY,
    USERS,
    FakeClock,
    Seed,
    make_settings,
    open_client,
    wait_for_background,
)

from intakeq_sim import SimConfig, SimulatorServer, demo_directory
from pqsync.bootstrap import App
from pqsync.db.engine import make_engine
from pqsync.db.tables import Affiliation, Organization, PartnerUser, Patient
from pqsync.intakeq.client import IntakeQClient
from pqsync.services.directory import import_directory, parse_directory
from pqsync.services.users import issue_token

CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture(scope="session")
def simulator() -> Iterator[SimulatorServer]:
    config = SimConfig(minute_limit=None, daily_limit=None)
    with SimulatorServer(port=0, seed=1, today=TODAY, api_key=INTAKEQ_KEY, config=config) as sim:
        yield sim


def _copy_database(template: object, source_url: str, tmp_dir: Path) -> str:
    """A new database holding what `source_url` holds (SQLite file copy or PG template)."""
    admin = getattr(template, "admin", None)
    if admin is None:
        path = tmp_dir / f"pqsync-{uuid.uuid4().hex[:8]}.db"
        shutil.copy(make_url(source_url).database or "", path)
        return f"sqlite:///{path}"
    name = f"pqsync_web_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        source = make_url(source_url).database
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{source}" STRATEGY FILE_COPY'))
    url: str = template.url(name)  # type: ignore[attr-defined]
    return url


def _drop_database(template: object, url: str) -> None:
    if getattr(template, "admin", None) is not None:
        template.drop(url)  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def seeded(
    _database_template: object,
    simulator: SimulatorServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, Seed]]:
    """The seeded template database's URL and what it holds."""
    tmp_dir = tmp_path_factory.mktemp("web")
    if getattr(_database_template, "admin", None) is None:
        assert isinstance(_database_template, Path)
        url = f"sqlite:///{tmp_dir / 'seeded.db'}"
        shutil.copy(_database_template, tmp_dir / "seeded.db")
    else:
        url = _database_template.new()  # type: ignore[attr-defined]
    engine = make_engine(url)
    directory = demo_directory(simulator.dataset)
    import_directory(engine, parse_directory(json.dumps(directory)))
    import_directory(engine, parse_directory(json.dumps(OTHER_ORG)))
    with Session(engine) as session:
        # Cheap argon2 parameters: a login costs a millisecond here, not a quarter second.
        session.execute(update(PartnerUser).values(password_hash=CHEAP_HASHER.hash(PASSWORD)))
        session.commit()
        tokens = {who: issue_token(session, email, now=NOW).token for who, email in USERS.items()}
        orgs = {
            "own": session.scalars(
                select(Organization.id).filter_by(slug="first-step-house")
            ).one(),
            "other": session.scalars(select(Organization.id).filter_by(slug="harbor-house")).one(),
        }
        consent: dict[str, uuid.UUID] = {}
        for aff in session.scalars(select(Affiliation).order_by(Affiliation.patient_id)):
            if aff.organization_id == orgs["own"]:
                consent.setdefault(aff.roi_consent_status, aff.patient_id)
        names = {p.id: p.full_name for p in session.scalars(select(Patient))}
        other_patient = session.scalars(
            select(Affiliation.patient_id).filter_by(organization_id=orgs["other"])
        ).one()
    engine.dispose()
    yield (
        url,
        Seed(
            tokens=tokens,
            orgs=orgs,
            consenting=consent["active"],
            expired=consent["expired"],
            missing=consent["missing"],
            other_patient=other_patient,
            names=names,
        ),
    )
    _drop_database(_database_template, url)


@pytest.fixture
def seed(seeded: tuple[str, Seed]) -> Seed:
    return seeded[1]


@pytest.fixture
def copy_seeded(
    _database_template: object, seeded: tuple[str, Seed], tmp_path: Path
) -> Iterator[Callable[[], str]]:
    """Makes fresh copies of the seeded database; dropped after the test."""
    made: list[str] = []

    def copy() -> str:
        made.append(_copy_database(_database_template, seeded[0], tmp_path))
        return made[-1]

    yield copy
    for url in made:
        _drop_database(_database_template, url)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def seeded_url(copy_seeded: Callable[[], str]) -> str:
    return copy_seeded()


@pytest.fixture
def build_app(
    seeded_url: str, simulator: SimulatorServer, clock: FakeClock, tmp_path: Path
) -> Iterator[Callable[..., App]]:
    """Builds Apps on the test's database: other settings, or another IntakeQ client."""
    apps: list[App] = []

    def build(intakeq: IntakeQClient | None = None, **settings: Any) -> App:
        settings.setdefault("PQSYNC_QUEUE_URL", f"sqlite:///{tmp_path}/queue-{len(apps)}.db")
        app = App(
            settings=make_settings(seeded_url, simulator, **settings),
            engine=make_engine(seeded_url),
            clock=clock,
            _client=intakeq,
        )
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.close()


@pytest.fixture
def pq_app(build_app: Callable[..., App]) -> App:
    return build_app()


@pytest.fixture
def client(pq_app: App) -> Iterator[TestClient]:
    with open_client(pq_app) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def module_url(
    _database_template: object,
    seeded: tuple[str, Seed],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """One seeded database for a whole module, for tests whose answers do not depend on
    what other tests change (refusals, the permission matrix, fuzzing)."""
    url = _copy_database(_database_template, seeded[0], tmp_path_factory.mktemp("module"))
    yield url
    _drop_database(_database_template, url)


@pytest.fixture(scope="module")
def module_client(
    module_url: str, simulator: SimulatorServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    """An app over the module's database."""
    queue = tmp_path_factory.mktemp("queue") / "queue.db"
    app = App(
        settings=make_settings(module_url, simulator, PQSYNC_QUEUE_URL=f"sqlite:///{queue}"),
        engine=make_engine(module_url),
        clock=FakeClock(),
    )
    try:
        with open_client(app) as test_client:
            yield test_client
    finally:
        app.close()


@pytest.fixture(scope="module")
def module_runs(module_client: TestClient, seeded: tuple[str, Seed]) -> dict[str, uuid.UUID]:
    """A finished organisation run of each organisation in the module's database."""
    seed = seeded[1]
    runs = {}
    for which, org_id in seed.orgs.items():
        response = module_client.post(
            f"/api/partner-dashboard/organizations/{org_id}/sync-all-patients",
            headers={**seed.bearer("staff_admin"), "Prefer": "respond-async"},
        )
        assert response.status_code == 202, response.text
        runs[which] = uuid.UUID(response.json()["runId"])
        wait_for_background(module_client)
    return runs


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The seeded database is a copy of the migrated template: run these on both backends.
    for item in items:
        if "seeded" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.db)
