"""Benchmark 5: the roster page (`/`, first page) of an organisation with 1,000 patients and
20,000 appointments, under 20 concurrent clients on loopback, served by `pqsync serve
--workers N` in its own processes. Baseline in the same run: `/healthz` under the same 20
clients, and `/healthz` probed by one more client while the roster is under load (what
everyone else feels while one heavy page is busy).

Targets (issue 18): roster p95 at most 3x /healthz's, at least 160 roster pages a second.

    .venv/bin/python bench/roster.py [--backends sqlite,postgresql] [--workers 2] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import httpx
from common import free_port, fresh_database, row, wait_until_up
from sqlalchemy import insert
from sqlalchemy.orm import Session

from pqsync.db.engine import make_engine
from pqsync.db.tables import Affiliation, Appointment, Organization, Patient, Provider
from pqsync.services.users import create_user

PATIENTS = 1_000
APPOINTMENTS = 20_000
CLIENTS = 20
EMAIL = "bench@clinic.example"
PASSWORD = "bench-password-0123456789"


def seed(url: str) -> uuid.UUID:
    """One organisation: 1,000 consenting patients, 20 appointments each over ±90 days."""
    engine = make_engine(url)
    now = datetime.now(UTC)
    with Session(engine) as session:
        org = Organization(slug="bench-house", name="Bench House", timezone="America/Denver")
        providers = [
            Provider(email=f"dr{i}@clinic.example", name=f"Dr. Bench {i}") for i in range(5)
        ]
        session.add_all([org, *providers])
        session.flush()
        patients = [
            {
                "id": uuid.uuid4(),
                "first_name": f"First{i:04d}",
                "last_name": f"Last{(i * 7919) % PATIENTS:04d}",
                "email": f"patient{i}@bench.example",
            }
            for i in range(PATIENTS)
        ]
        session.execute(insert(Patient), patients)
        session.execute(
            insert(Affiliation),
            [
                {
                    "patient_id": p["id"],
                    "organization_id": org.id,
                    "roi_consent_status": "active",
                    "last_practiceq_sync_at": now - timedelta(hours=2),
                }
                for p in patients
            ],
        )
        per_patient = APPOINTMENTS // PATIENTS
        session.execute(
            insert(Appointment),
            [
                {
                    "pq_appointment_id": f"bench-{n}-{k}",
                    "patient_id": p["id"],
                    "provider_id": providers[(n + k) % len(providers)].id,
                    "status": "confirmed",
                    "start_time": now + timedelta(days=-90 + k * 9, hours=n % 9),
                    "extra": {},
                }
                for n, p in enumerate(patients)
                for k in range(per_patient)
            ],
        )
        session.commit()
        create_user(session, email=EMAIL, role="staff_admin", password=PASSWORD)
        org_id = org.id
    engine.dispose()
    return org_id


@contextmanager
def server(url: str, workers: int) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PQSYNC_", "INTAKEQ_"))}
    env.update(
        PQSYNC_DATABASE_URL=url,
        INTAKEQ_BASE_URL="http://127.0.0.1:9/api/v1",  # never called: pages read the database
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pqsync.cli",
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(os.environ.get("ROSTER_SERVER_LOG", os.devnull), "w"),  # noqa: SIM115
    )
    root = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{root}/healthz")
        yield root
    finally:
        process.terminate()
        process.wait(timeout=30)


def session_cookie(root: str) -> dict[str, str]:
    with httpx.Client(base_url=root) as client:
        form = client.get("/login").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', form)
        assert token is not None
        answer = client.post(
            "/login", data={"email": EMAIL, "password": PASSWORD, "csrf_token": token.group(1)}
        )
        assert answer.status_code == 303, answer.text
        return dict(client.cookies)


async def hammer(
    root: str, path: str, cookies: dict[str, str], clients: int, seconds: float
) -> list[float]:
    """`clients` clients requesting `path` back to back for `seconds`; each answer's time."""
    timings: list[float] = []
    stop = time.perf_counter() + seconds

    async def one() -> None:
        async with httpx.AsyncClient(base_url=root, cookies=cookies, timeout=60) as client:
            while time.perf_counter() < stop:
                started = time.perf_counter()
                answer = await client.get(path)
                timings.append(time.perf_counter() - started)
                # /healthz is 503 while no worker runs (none does here): still an answer.
                if answer.status_code not in (200, 503 if path == "/healthz" else 200):
                    raise RuntimeError(f"{path} answered {answer.status_code}")

    await asyncio.gather(*(one() for _ in range(clients)))
    return timings


async def roster_with_probe(
    root: str, path: str, cookies: dict[str, str], seconds: float
) -> tuple[list[float], list[float]]:
    return await asyncio.gather(
        hammer(root, path, cookies, CLIENTS, seconds), hammer(root, "/healthz", {}, 1, seconds)
    )


def figures(label: str, timings: list[float], seconds: float) -> str:
    ordered = sorted(timings)
    p50 = statistics.median(ordered) * 1000
    p95 = ordered[int(len(ordered) * 0.95) - 1] * 1000
    return row(label, f"{p50:.1f} ms", f"{p95:.1f} ms", f"{len(ordered) / seconds:.0f}/s")


def run(backend: str, workers: int, seconds: float) -> None:
    with fresh_database(backend) as url:
        org_id = seed(url)
        with server(url, workers) as root:
            cookies = session_cookie(root)
            path = f"/?org={org_id}"
            page = httpx.get(f"{root}{path}", cookies=cookies)
            assert page.status_code == 200 and page.text.count("data-patient-row=") == 50
            asyncio.run(hammer(root, path, cookies, CLIENTS, 2))  # warm up every worker
            healthz = asyncio.run(hammer(root, "/healthz", {}, CLIENTS, seconds))
            roster, probe = asyncio.run(roster_with_probe(root, path, cookies, seconds))
    print(f"\n{backend}, {workers} worker(s), {CLIENTS} clients, {seconds:.0f} s each")
    print(row("", "p50", "p95", "rate"))
    print(figures("/healthz alone (baseline)", healthz, seconds))
    print(figures("roster, first page", roster, seconds))
    print(figures("/healthz, 1 client, while the roster is loaded", probe, seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    for backend in args.backends.split(","):
        run(backend, args.workers, args.seconds)


if __name__ == "__main__":
    main()
