"""The dashboard's pages over HTTP: headers, forms, who may open what, the paged roster, and
that the roster's cost in SQL statements does not grow with the organisation."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, insert, select, text
from sqlalchemy.orm import Session
from web_support import NOW, PASSWORD, USERS, FakeClock, Seed, open_client

import leakcheck
from intakeq_sim import SimulatorServer
from pqsync.bootstrap import App
from pqsync.db.tables import Affiliation, Appointment, Organization, Patient
from pqsync.services.directory import import_directory, parse_directory
from pqsync.services.users import create_user

PATIENTS = "/api/partner-dashboard/patients"
INLINE = re.compile(r"<script(?![^>]*\bsrc=)|\sstyle=|\son[a-z]+=", re.IGNORECASE)


def sign_in(client: TestClient, who: str) -> str:
    """Sign in through the form (`who`: a seeded role, or an email); returns the session's
    CSRF token (from the page)."""
    form = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token is not None
    answer = client.post(
        "/login",
        data={"email": USERS.get(who, who), "password": PASSWORD, "csrf_token": token.group(1)},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    roster = client.get("/")
    csrf = re.search(r'<meta name="csrf-token" content="([^"]+)"', roster.text)
    assert csrf is not None
    return csrf.group(1)


def test_pages_send_a_strict_csp_and_hold_no_inline_script_or_style(
    client: TestClient, seed: Seed
) -> None:
    login = client.get("/login")
    sign_in(client, "staff_admin")
    pages = [
        login,
        client.get(f"/?org={seed.orgs['own']}"),
        client.get(f"/patients/{seed.consenting}"),
        client.get("/staff/runs"),
        client.get("/staff/practitioners"),
    ]
    for page in pages:
        assert page.status_code == 200, page.url
        policy = page.headers["Content-Security-Policy"]
        assert "default-src 'self'" in policy and "unsafe-inline" not in policy
        assert INLINE.search(page.text) is None, page.url


def test_no_patient_name_in_a_page_title(client: TestClient, seed: Seed) -> None:
    sign_in(client, "case_manager")
    for path in ("/", f"/patients/{seed.consenting}"):
        title = re.search(r"<title>(.*?)</title>", client.get(path).text)
        assert title is not None
        assert all(name not in title.group(1) for name in seed.names.values())


def test_signing_in_needs_the_form_s_token(client: TestClient) -> None:
    answer = client.post(
        "/login", data={"email": USERS["case_manager"], "password": PASSWORD, "csrf_token": "x"}
    )
    assert answer.status_code == 400
    assert "The form expired" in answer.text
    assert client.get("/", follow_redirects=False).headers["location"] == "/login"


def test_signing_out_needs_the_session_s_token(client: TestClient) -> None:
    csrf = sign_in(client, "case_manager")
    refused = client.post("/logout", data={"csrf_token": "forged"})
    assert refused.status_code == 403
    assert "This form is out of date: nothing was changed." in refused.text
    assert client.post("/logout").status_code == 403  # no token at all
    assert client.get("/").status_code == 200  # still signed in
    client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert client.get("/", follow_redirects=False).status_code == 303


def test_partners_cannot_open_staff_pages(client: TestClient) -> None:
    sign_in(client, "partner_admin")
    for path in ("/staff/runs", "/staff/practitioners"):
        page = client.get(path)
        assert page.status_code == 403
        assert "Your role cannot open this page." in page.text


def test_a_failing_page_is_calm_and_logged(client: TestClient, seed: Seed, pq_app: App) -> None:
    sign_in(client, "case_manager")
    with pq_app.engine.begin() as conn:
        conn.execute(text("DROP TABLE patient_activity_log"))
    page = client.get(f"/patients/{seed.consenting}")
    assert page.status_code == 500
    assert "Something went wrong" in page.text and "Nothing was changed" in page.text
    assert "Traceback" not in page.text and "patient_activity_log" not in page.text
    lines = leakcheck.session_log().read_text().splitlines()
    logged = [json.loads(line) for line in lines if line.startswith("{")]
    assert any(
        entry.get("event") == "page.failed" and entry.get("route") == "/patients/{patient_id}"
        for entry in logged
    )


def test_a_search_travels_in_the_body_and_narrows_the_roster(
    client: TestClient, seed: Seed
) -> None:
    csrf = sign_in(client, "case_manager")
    name = seed.names[seed.consenting]
    found = client.post("/", data={"q": name.split()[-1].upper(), "csrf_token": csrf})
    assert found.status_code == 200
    assert f'data-patient-row="{seed.consenting}"' in found.text
    assert found.text.count("data-patient-row=") < 12
    nothing = client.post("/", data={"q": "zzzz-nobody", "csrf_token": csrf})
    assert "No patient's name matches the search." in nothing.text


# -- the JSON roster, a page at a time -------------------------------------------------------


def test_the_json_roster_pages_through_everyone_once(client: TestClient, seed: Seed) -> None:
    partner = seed.bearer("partner_admin")
    everyone = client.get(PATIENTS, headers=partner).json()
    assert everyone["nextCursor"] is None
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 5, **({"cursor": cursor} if cursor else {})}
        page = client.get(PATIENTS, headers=partner, params=params).json()
        assert len(page["patients"]) <= 5
        seen += [p["id"] for p in page["patients"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
        assert all(name not in cursor for name in seed.names.values())
    assert seen == [p["id"] for p in everyone["patients"]]
    assert len(seen) == 12


def test_the_json_roster_searches_by_name(client: TestClient, seed: Seed) -> None:
    first, last = seed.names[seed.consenting].split()[0], seed.names[seed.consenting].split()[-1]
    found = client.get(
        PATIENTS, headers=seed.bearer("partner_admin"), params={"q": f"{last} {first[:2]}"}
    ).json()
    assert [p["id"] for p in found["patients"]] == [str(seed.consenting)]


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"cursor": "not-a-cursor"}, "invalid_cursor"),
        ({"cursor": f"{uuid.uuid4()}.{uuid.uuid4()}"}, "invalid_cursor"),
        ({"limit": 0}, "invalid_request"),
        ({"limit": 201}, "invalid_request"),
    ],
)
def test_bad_roster_paging_is_refused(
    client: TestClient, seed: Seed, params: dict[str, Any], code: str
) -> None:
    answer = client.get(PATIENTS, headers=seed.bearer("partner_admin"), params=params)
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == code


# -- the roster costs the same number of statements for 10 patients as for 1,000 -----------


def add_organization(app: App, slug: str, patients: int) -> uuid.UUID:
    """An organisation with `patients` consenting patients, each with two appointments."""
    directory = {
        "organizations": [{"slug": slug, "name": slug.title(), "timezone": "America/Denver"}],
        "patients": [
            {"first_name": f"P{i:04d}", "last_name": slug, "email": f"p{i}@{slug}.example"}
            for i in range(patients)
        ],
        "affiliations": [
            {
                "patient": f"p{i}@{slug}.example",
                "organization": slug,
                "roi_consent": {"status": "active", "expires_on": "2026-12-31"},
            }
            for i in range(patients)
        ],
    }
    import_directory(app.engine, parse_directory(json.dumps(directory)))
    with Session(app.engine) as session:
        org_id = session.scalars(select(Organization.id).filter_by(slug=slug)).one()
        patient_ids = session.scalars(
            select(Affiliation.patient_id).filter_by(organization_id=org_id)
        ).all()
        rows = [
            {
                "pq_appointment_id": f"{slug}-{n}-{k}",
                "patient_id": pid,
                "status": "confirmed",
                "start_time": NOW + timedelta(days=k + 1, hours=n % 8),
                "extra": {},
            }
            for n, pid in enumerate(patient_ids)
            for k in range(2)
        ]
        session.execute(insert(Appointment), rows)
        session.commit()
    return org_id


@pytest.fixture
def statements(pq_app: App) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(args[2])

    event.listen(pq_app.engine, "before_cursor_execute", record)
    yield seen
    event.remove(pq_app.engine, "before_cursor_execute", record)


def test_the_roster_page_issues_as_many_statements_for_1000_patients_as_for_10(
    pq_app: App, statements: list[str]
) -> None:
    small = add_organization(pq_app, "small-house", 10)
    large = add_organization(pq_app, "large-house", 1000)
    with open_client(pq_app) as client:
        sign_in(client, "staff_admin")
        counts = {}
        for name, org in (("small", small), ("large", large)):
            client.get(f"/?org={org}")  # warm: the first request of a kind may cache lookups
            statements.clear()
            page = client.get(f"/?org={org}")
            assert page.status_code == 200
            counts[name] = len(statements)
        assert page.text.count("data-patient-row=") == 50
        assert "Next page" in page.text
    assert counts["small"] == counts["large"]


def test_the_patient_page_marks_changes_and_says_who_caused_them(
    client: TestClient, seed: Seed, simulator: SimulatorServer, pq_app: App, clock: FakeClock
) -> None:
    csrf = sign_in(client, "case_manager")
    sync = f"/api/partner-dashboard/patients/{seed.consenting}/sync"
    assert client.post(sync, headers={"X-CSRF-Token": csrf}).status_code == 200
    with Session(pq_app.engine) as session:
        client_id = session.scalars(
            select(Patient.intakeq_client_id).filter_by(id=seed.consenting)
        ).one()
    control = simulator.control_url + "/appointments"
    moved = httpx.post(
        control, json={"ClientId": client_id, "StartDateLocal": "2025-11-20T14:00:00"}
    )
    called_off = httpx.post(
        control, json={"ClientId": client_id, "StartDateLocal": "2025-11-21T10:00:00"}
    )
    clock.advance(seconds=61)  # a sync within the minute answers with the last one
    assert client.post(sync, headers={"X-CSRF-Token": csrf}).json()["summary"]["new"] == 2
    clock.advance(seconds=61)
    httpx.patch(f"{control}/{moved.json()['Id']}", json={"StartDateLocal": "2025-11-20T15:30:00"})
    httpx.post(f"{control}/{called_off.json()['Id']}/cancel", json={})
    assert client.post(sync, headers={"X-CSRF-Token": csrf}).json()["summary"]["updated"] == 2

    page = " ".join(
        re.sub(r"<[^>]+>", " ", client.get(f"/patients/{seed.consenting}").text).split()
    )
    assert "start 2:00 PM → 3:30 PM" in page
    assert "status confirmed → cancelled" in page
    assert re.search(
        r"Appointment changed ?: Nov 20, 2025 at 3:30 PM with Dr\. C\. Rufus Sweeney · Jordan Ames",
        page,
    )
    upcoming, past = page.split("Past and cancelled appointments")
    assert "Nov 20, 2025 at 3:30 PM" in upcoming
    assert "Nov 21, 2025 at 10:00 AM" in past and "Cancelled" in past

    httpx.post(f"{control}/{moved.json()['Id']}/delete", json={})
    clock.advance(seconds=61)
    assert client.post(sync, headers={"X-CSRF-Token": csrf}).status_code == 200
    page = " ".join(
        re.sub(r"<[^>]+>", " ", client.get(f"/patients/{seed.consenting}").text).split()
    )
    upcoming, past = page.split("Past and cancelled appointments")
    assert "Nov 20, 2025 at 3:30 PM" not in upcoming
    assert "Nov 20, 2025 at 3:30 PM Deleted in PracticeQ" in past
    assert "Appointment deleted in PracticeQ" in page


def test_staff_map_a_practitioner_with_the_form(
    client: TestClient, pq_app: App, simulator: SimulatorServer
) -> None:
    pq_app.sync_service().sync_organization("first-step-house")
    csrf = sign_in(client, "staff_admin")
    before = client.get("/staff/practitioners").text
    unmapped = simulator.dataset.special.unmapped_practitioner
    assert unmapped.id in before
    provider = "locum@clinic.example"  # a provider with no IntakeQ practitioner yet
    locum = {"providers": [{"email": provider, "name": "Dr. Lou Locum"}]}
    import_directory(pq_app.engine, parse_directory(json.dumps(locum)))
    bad = client.post(
        "/staff/practitioners",
        data={"practitioner_id": unmapped.id, "provider": "nobody@x.example", "csrf_token": csrf},
    )
    assert bad.status_code == 422 and "Not mapped: no such provider" in bad.text
    done = client.post(
        "/staff/practitioners",
        data={"practitioner_id": unmapped.id, "provider": provider, "csrf_token": csrf},
    )
    assert done.status_code == 200
    assert re.search(r"Mapped\. [1-9]\d* appointment\(s\) now show their provider\.", done.text)
    assert f'<th scope="row">{unmapped.id}</th>' not in done.text


def test_partners_cannot_create_a_provider(client: TestClient, pq_app: App) -> None:
    with open_client(pq_app) as partner:
        csrf = sign_in(partner, "partner_admin")
        form = {"name": "Dr. Mallory", "email": "mallory@clinic.example", "csrf_token": csrf}
        refused = partner.post("/staff/practitioners/providers", data=form)
    assert refused.status_code == 403
    assert "Your role cannot open this page." in refused.text
    sign_in(client, "staff_admin")
    # The staff page lists every provider: the refused one is not among them.
    assert "mallory@clinic.example" not in client.get("/staff/practitioners").text


def test_staff_who_may_only_read_cannot_change_the_practitioners_mapping(
    client: TestClient, pq_app: App, simulator: SimulatorServer
) -> None:
    pq_app.sync_service().sync_organization("first-step-house")
    with Session(pq_app.engine) as session:
        create_user(session, email="auditor@clinic.example", role="staff_viewer", password=PASSWORD)
        session.commit()
    csrf = sign_in(client, "auditor@clinic.example")
    unmapped = simulator.dataset.special.unmapped_practitioner
    assert unmapped.id in client.get("/staff/practitioners").text  # they may read it

    mapped = client.post(
        "/staff/practitioners",
        data={"practitioner_id": unmapped.id, "provider": "ops@clinic.example", "csrf_token": csrf},
    )
    created = client.post(
        "/staff/practitioners/providers",
        data={"name": "Dr. Mallory", "email": "mallory@clinic.example", "csrf_token": csrf},
    )

    assert mapped.status_code == 403
    assert "Not mapped: your role may only read." in mapped.text
    assert created.status_code == 403
    assert "Provider not created: your role may only read." in created.text
    assert 'value="Dr. Mallory"' in created.text  # what they typed is kept
    page = client.get("/staff/practitioners").text
    assert f'<th scope="row">{unmapped.id}</th>' in page  # still unmapped
    assert "mallory@clinic.example" not in page


def test_the_remembered_organisation_is_an_id_only_and_partners_ignore_it(
    client: TestClient, seed: Seed, pq_app: App
) -> None:
    sign_in(client, "staff_admin")
    other = seed.orgs["other"]
    assert "Harbor House" in client.get(f"/?org={other}").text
    remembered = client.cookies.get("pqsync_staff_org")
    assert remembered == str(other)  # an organisation's id: no name, no patient
    assert "Harbor House" in client.get("/").text  # the "Patients" link
    client.cookies.delete("pqsync_staff_org")
    assert "Choose an organisation" in client.get("/").text
    client.cookies.set("pqsync_staff_org", str(other))  # as this test sets it: it is sent
    assert "Harbor House" in client.get("/").text
    # A partner in the same browser keeps to their own organisation.
    with open_client(pq_app) as partner:
        partner.cookies.set("pqsync_staff_org", str(other))
        sign_in(partner, "partner_admin")
        page = partner.get("/").text
        assert "First Step House" in page and "Harbor House" not in page
    # An organisation that no longer exists is forgotten: staff choose again.
    client.cookies.delete("pqsync_staff_org")
    client.cookies.set("pqsync_staff_org", str(uuid.uuid4()))
    again = client.get("/")
    assert again.status_code == 200 and "Choose an organisation" in again.text
