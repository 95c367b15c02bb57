"""Every casework view sends as many SQL statements for 1,000 residents as for 10."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, insert, select
from sqlalchemy.orm import Session
from test_dashboard_pages import add_organization
from web_support import NOW, PASSWORD, open_client

from pqsync.bootstrap import App
from pqsync.db.tables import Affiliation, Appointment
from pqsync.services.directory import import_directory, parse_directory


def add_house(app: App, slug: str, residents: int) -> str:
    """An organisation of `residents` consenting residents (two upcoming appointments each,
    one missed last week) and its partner admin; returns the admin's email."""
    org_id = add_organization(app, slug, residents)
    with Session(app.engine) as session:
        patient_ids = session.scalars(
            select(Affiliation.patient_id).filter_by(organization_id=org_id)
        ).all()
        session.execute(
            insert(Appointment),
            [
                {
                    "pq_appointment_id": f"{slug}-missed-{n}",
                    "patient_id": pid,
                    "status": "no_show",
                    "start_time": NOW - timedelta(days=3, hours=n % 8),
                    "extra": {},
                }
                for n, pid in enumerate(patient_ids)
            ],
        )
        session.commit()
    email = f"manager@{slug}.example"
    users = {
        "partner_users": [
            {
                "email": email,
                "name": f"Manager of {slug}",
                "organization": slug,
                "role": "partner_admin",
                "password": PASSWORD,
            }
        ]
    }
    import_directory(app.engine, parse_directory(json.dumps(users)))
    return email


@pytest.fixture
def statements(pq_app: App) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(args[2])

    event.listen(pq_app.engine, "before_cursor_execute", record)
    yield seen
    event.remove(pq_app.engine, "before_cursor_execute", record)


def first_patient(page: str) -> str:
    found = re.search(r'href="/patients/([0-9a-f-]{36})"', page)
    assert found is not None
    return found.group(1)


def test_each_casework_view_costs_the_same_statements_for_1000_residents_as_for_10(
    pq_app: App, statements: list[str]
) -> None:
    counts: dict[str, dict[str, int]] = {}
    for size, residents in (("small", 10), ("large", 1000)):
        email = add_house(pq_app, f"{size}-house", residents)
        with open_client(pq_app) as client:
            for _visit in range(2):  # the second sign-in has a last visit to compare with
                client.cookies.clear()
                form = client.get("/login")
                token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
                assert token is not None
                client.post(
                    "/login",
                    data={"email": email, "password": PASSWORD, "csrf_token": token.group(1)},
                )
                pq_app.clock.advance(minutes=5)  # type: ignore[attr-defined]
            roster = client.get("/").text
            assert "Needs attention" in roster
            patient = first_patient(roster)
            csrf = re.search(r'name="csrf-token" content="([^"]+)"', roster)
            assert csrf is not None
            address = re.search(
                r'value="[^"]*(/calendar/[^"]+)"',
                client.post("/calendar", data={"csrf_token": csrf.group(1)}).text,
            )
            assert address is not None
            resident = re.search(
                r'id="resident-feed"[^>]*value="[^"]*(/calendar/[^"]+)"',
                client.get(f"/patients/{patient}").text,
            )
            assert resident is not None
            views = {
                "roster": "/",
                "roster-filtered": "/?show=missed&sort=next",
                "roster-sorted": "/?sort=synced",
                "week": "/week",
                "roster-csv": "/roster.csv",
                "attendance": f"/patients/{patient}/attendance",
                "attendance-csv": f"/patients/{patient}/attendance.csv",
                "feed": address.group(1),
                "patient": f"/patients/{patient}",
                "resident-feed": resident.group(1),
                "organization": "/organization",
                "calendar": "/calendar",
            }
            counts[size] = {}
            for name, path in views.items():
                client.get(path)  # warm: a first request of a kind may cache lookups
                statements.clear()
                answer = client.get(path)
                assert answer.status_code == 200, (name, answer.text[:200])
                counts[size][name] = len(statements)
    assert counts["small"] == counts["large"]
