"""A case manager's morning over HTTP: needs attention on the roster, this week, the
attendance record and the roster as CSV (each export in the resident's history)."""

from __future__ import annotations

import csv
import io
import re
from datetime import date, timedelta

import httpx
from casework_support import add_appointments, denver, names, set_consent, text_of
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from test_dashboard_pages import INLINE, sign_in
from web_support import NOW, USERS, Seed, open_client

from intakeq_sim import SimulatorServer
from pqsync.bootstrap import App
from pqsync.db.tables import Affiliation, Patient
from pqsync.services.access import access_for_patient


def day_of(page: str, day: str) -> str:
    found = re.search(
        rf'<section class="week-day" aria-labelledby="day-{day}">.*?</section>', page, re.DOTALL
    )
    assert found is not None, day
    return text_of(found.group(0))


def attention_section(page: str) -> str:
    found = re.search(r'<section id="attention".*?</section>', page, re.DOTALL)
    assert found is not None
    return found.group(0)


def count_in(section: str, heading: str) -> int:
    found = re.search(re.escape(heading) + r" \((\d+)\)", text_of(section))
    assert found is not None, heading
    return int(found.group(1))


# -- needs attention -------------------------------------------------------------------------


def test_needs_attention_lists_missed_and_late_cancelled_visits_of_consenting_residents(
    client: TestClient, seed: Seed, pq_app: App
) -> None:
    three_days_ago = NOW - timedelta(days=3)
    five_days_ago = NOW - timedelta(days=5)
    add_appointments(
        pq_app,
        {"patient_id": seed.consenting, "start_time": three_days_ago, "status": "no_show"},
        {  # called off two hours before: late
            "patient_id": seed.consenting,
            "start_time": five_days_ago,
            "status": "cancelled",
            "intakeq_last_modified": five_days_ago - timedelta(hours=2),
        },
        {  # called off three days ahead: not late
            "patient_id": seed.consenting,
            "start_time": NOW - timedelta(days=2),
            "status": "cancelled",
            "intakeq_last_modified": NOW - timedelta(days=5),
        },
        {
            "patient_id": seed.consenting,
            "start_time": NOW - timedelta(days=20),
            "status": "no_show",
        },
        # No consent: the case manager may not see this resident's appointments.
        {"patient_id": seed.expired, "start_time": three_days_ago, "status": "no_show"},
    )
    sign_in(client, "case_manager")
    section = attention_section(client.get("/").text)
    words = text_of(section)
    heading = "Missed or cancelled late (last 14 days)"
    assert count_in(section, heading) == 2
    name = seed.names[seed.consenting]
    assert f"{name} Missed: Wed, Nov 12 at 2:03 PM" in words
    assert f"{name} Cancelled late: Mon, Nov 10 at 2:03 PM" in words
    assert seed.names[seed.expired] + " Missed" not in words
    assert f'href="/patients/{seed.consenting}"' in section
    # The expired consent is an item of its own; the missing one is not "expiring".
    assert f"{seed.names[seed.expired]} ROI consent expired on Oct 16, 2025" in words
    assert seed.names[seed.missing] + " ROI consent" not in words


def test_a_handled_item_stays_handled_with_who_and_when(
    client: TestClient, seed: Seed, pq_app: App
) -> None:
    add_appointments(
        pq_app,
        {"patient_id": seed.consenting, "start_time": NOW - timedelta(days=1), "status": "no_show"},
    )
    csrf = sign_in(client, "case_manager")
    page = client.get("/").text
    before = count_in(attention_section(page), "Needs attention")
    form = re.search(
        r'name="patient" value="' + str(seed.consenting) + r'">\s*'
        r'<input type="hidden" name="key" value="(appointment:[^"]+)">',
        page,
    )
    assert form is not None
    done = client.post(
        "/attention/handled",
        data={"csrf_token": csrf, "patient": str(seed.consenting), "key": form.group(1)},
        follow_redirects=False,
    )
    assert done.status_code == 303
    again = client.post(  # twice: the first mark stays
        "/attention/handled",
        data={"csrf_token": csrf, "patient": str(seed.consenting), "key": form.group(1)},
        follow_redirects=False,
    )
    assert again.status_code == 303
    # Another person, later, sees it handled by Jordan at the time it was marked.
    pq_app.clock.advance(hours=3)  # type: ignore[attr-defined]
    with open_client(pq_app) as other:
        sign_in(other, "partner_admin")
        section = attention_section(other.get("/").text)
    assert count_in(section, "Needs attention") == before - 1
    assert count_in(section, "Missed or cancelled late (last 14 days)") == 0
    handled = text_of(section).split("Handled (1)")[1]
    assert seed.names[seed.consenting] in handled
    assert "Handled by Jordan Ames, Nov 15, 2025 at 2:03 PM" in handled


def test_marking_needs_a_role_that_acts_the_form_token_and_a_real_item(
    client: TestClient, seed: Seed, pq_app: App
) -> None:
    add_appointments(
        pq_app,
        {"patient_id": seed.consenting, "start_time": NOW - timedelta(days=1), "status": "no_show"},
    )
    csrf = sign_in(client, "viewer")
    page = client.get("/").text
    assert "Mark handled" not in page and "Needs attention" in page
    refused = client.post(
        "/attention/handled",
        data={"csrf_token": csrf, "patient": str(seed.consenting), "key": "no_upcoming:none"},
    )
    assert refused.status_code == 403
    with open_client(pq_app) as manager:
        token = sign_in(manager, "case_manager")
        made_up = {"csrf_token": token, "patient": str(seed.consenting), "key": "appointment:x"}
        assert manager.post("/attention/handled", data=made_up).status_code == 404
        forged = {**made_up, "csrf_token": "forged"}
        assert manager.post("/attention/handled", data=forged).status_code == 403


def test_no_upcoming_appointment_until_one_is_booked(
    client: TestClient, seed: Seed, pq_app: App
) -> None:
    sign_in(client, "case_manager")
    name = seed.names[seed.consenting]
    words = text_of(attention_section(client.get("/").text))
    assert f"{name} No upcoming appointment" in words
    # Details (and so "no upcoming") only for consenting residents.
    assert f"{seed.names[seed.missing]} No upcoming appointment" not in words
    add_appointments(pq_app, {"patient_id": seed.consenting, "start_time": NOW + timedelta(days=2)})
    words = text_of(attention_section(client.get("/").text))
    assert f"{name} No upcoming appointment" not in words


def test_a_consent_expiring_within_30_days_needs_attention(
    client: TestClient, seed: Seed, pq_app: App
) -> None:
    set_consent(pq_app, seed.consenting, seed.orgs["own"], "active", date(2025, 12, 10))
    sign_in(client, "case_manager")
    words = text_of(attention_section(client.get("/").text))
    assert f"{seed.names[seed.consenting]} ROI consent expires on Dec 10, 2025" in words
    set_consent(pq_app, seed.consenting, seed.orgs["own"], "active", date(2025, 12, 16))
    words = text_of(attention_section(client.get("/").text))
    assert "ROI consent expires on" not in words


# -- this week -------------------------------------------------------------------------------


def test_this_week_lists_consenting_residents_by_day_in_the_organisation_s_zone(
    client: TestClient, seed: Seed, pq_app: App
) -> None:
    provider, service = names(pq_app)
    add_appointments(
        pq_app,
        # US daylight saving time ends on Sunday, Nov 2, 2025: both are 9:00 AM in Denver.
        {"patient_id": seed.consenting, "start_time": denver(2025, 11, 1, 9, 0),
         "location_name": "Main clinic"},
        {"patient_id": seed.consenting, "start_time": denver(2025, 11, 3, 9, 0),
         "status": "no_show"},
        # Late on Sunday in Denver, Monday in UTC: still Sunday's.
        {"patient_id": seed.consenting, "start_time": denver(2025, 11, 2, 22, 30)},
        {"patient_id": seed.expired, "start_time": denver(2025, 11, 1, 10, 0)},
    )  # fmt: skip
    sign_in(client, "case_manager")
    page = client.get("/week?of=2025-10-29")
    assert page.status_code == 200
    words = text_of(page.text)
    assert "Mon, Oct 27 to Sun, Nov 2, 2025 · 2 appointments" in words
    saturday = day_of(page.text, "2025-11-01")
    name = seed.names[seed.consenting]
    assert f"9:00 AM {name} {provider} {service} Main clinic Confirmed" in saturday
    assert seed.names[seed.expired] not in words
    assert "10:30 PM" in day_of(page.text, "2025-11-02")
    with Session(pq_app.engine) as session:  # the read is in the access record
        assert "week" in [e.view for e in access_for_patient(session, seed.consenting)]
        assert "week" not in [e.view for e in access_for_patient(session, seed.expired)]
    assert 'href="/week?of=2025-11-03"' in page.text and 'href="/week?of=2025-10-20"' in page.text
    following = day_of(client.get("/week?of=2025-11-03").text, "2025-11-03")
    assert f"9:00 AM {name} {provider} {service} — No-show" in following


def test_this_week_is_the_current_week_by_default_and_refuses_a_bad_date(
    client: TestClient,
) -> None:
    sign_in(client, "partner_admin")
    assert "Mon, Nov 10 to Sun, Nov 16, 2025" in text_of(client.get("/week").text)
    assert client.get("/week?of=yesterday").status_code == 404


# -- records to hand on ----------------------------------------------------------------------


def attendance_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))


def test_the_attendance_record_counts_kept_missed_and_cancelled_and_is_in_the_history(
    client: TestClient, seed: Seed, pq_app: App
) -> None:
    add_appointments(
        pq_app,
        {"patient_id": seed.consenting, "start_time": denver(2025, 10, 1, 10, 0)},
        {"patient_id": seed.consenting, "start_time": denver(2025, 10, 8, 10, 0),
         "status": "no_show"},
        {"patient_id": seed.consenting, "start_time": denver(2025, 10, 15, 10, 0),
         "status": "cancelled", "location_name": "=HYPERLINK(\"http://x\")"},
        {"patient_id": seed.consenting, "start_time": denver(2025, 11, 20, 10, 0)},
        {"patient_id": seed.consenting, "start_time": denver(2025, 9, 1, 10, 0)},  # before
    )  # fmt: skip
    sign_in(client, "case_manager")
    page = client.get(f"/patients/{seed.consenting}/attendance?start=2025-09-02&end=2025-11-30")
    assert page.status_code == 200
    words = text_of(page.text)
    assert "1 kept , 1 missed , 1 cancelled , 1 upcoming" in words
    assert "2025-10-08 10:00 AM" in words
    download = client.get(
        f"/patients/{seed.consenting}/attendance.csv?start=2025-09-02&end=2025-11-30"
    )
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("text/csv")
    assert "attachment" in download.headers["content-disposition"]
    assert seed.names[seed.consenting] not in download.headers["content-disposition"]
    rows = attendance_rows(download.text)
    assert [(r["Date"], r["Outcome"]) for r in rows] == [
        ("2025-10-01", "Kept"),
        ("2025-10-08", "Missed"),
        ("2025-10-15", "Cancelled"),
        ("2025-11-20", "Upcoming"),
    ]
    assert rows[2]["Location"].startswith("'=")  # a spreadsheet does not run it
    history = text_of(client.get(f"/patients/{seed.consenting}").text).split("History")[1]
    assert (
        "Attendance record downloaded as CSV, 2025-09-02 to 2025-11-30 · Jordan Ames · "
        "Nov 15, 2025 at 2:03 PM" in history
    )
    assert "Attendance record opened for printing, 2025-09-02 to 2025-11-30" in history
    with Session(pq_app.engine) as session:
        record = access_for_patient(session, seed.consenting)
    exports = [(e.view, e.user_email, e.detail) for e in record if e.view.startswith("attend")]
    assert (
        "attendance_csv",
        USERS["case_manager"],
        "Attendance record downloaded as CSV, 2025-09-02 to 2025-11-30",
    ) in exports
    assert all(e.accessed_at == NOW for e in record if e.view == "attendance_csv")


def test_no_attendance_record_without_consent_or_of_another_organisation(
    client: TestClient, seed: Seed
) -> None:
    sign_in(client, "case_manager")
    for patient in (seed.expired, seed.missing):
        assert client.get(f"/patients/{patient}/attendance.csv").status_code == 403
        assert client.get(f"/patients/{patient}/attendance").status_code == 403
    assert client.get(f"/patients/{seed.other_patient}/attendance.csv").status_code == 404
    assert client.get(f"/patients/{seed.consenting}/attendance.csv?start=x").status_code == 404


def test_the_roster_csv_holds_details_only_where_consent_allows_and_is_in_every_history(
    client: TestClient, seed: Seed, pq_app: App
) -> None:
    add_appointments(
        pq_app,
        {"patient_id": seed.consenting, "start_time": denver(2025, 11, 20, 10, 0)},
        {"patient_id": seed.expired, "start_time": denver(2025, 11, 21, 10, 0)},
    )
    sign_in(client, "case_manager")
    download = client.get("/roster.csv")
    assert download.status_code == 200
    rows = {r["Resident"]: r for r in attendance_rows(download.text)}
    assert len(rows) == 12 and seed.names[seed.other_patient] not in rows
    assert rows[seed.names[seed.consenting]]["Next appointment"] == "2025-11-20 10:00"
    assert rows[seed.names[seed.expired]]["Next appointment"] == "ROI consent required"
    assert rows[seed.names[seed.expired]]["Provider of the next appointment"] == ""
    assert rows[seed.names[seed.expired]]["ROI consent"] == "expired (until 2025-10-16)"
    history = text_of(client.get(f"/patients/{seed.consenting}").text).split("History")[1]
    assert "Roster downloaded as CSV · Jordan Ames" in history
    with Session(pq_app.engine) as session:
        for patient in seed.names:
            views = [e.view for e in access_for_patient(session, patient)]
            expected = 0 if patient == seed.other_patient else 1
            assert views.count("roster_csv") == expected


# -- roster filters and sort -----------------------------------------------------------------


def row_ids(page: str) -> list[str]:
    return re.findall(r'data-patient-row="([^"]+)"', page)


def test_roster_filters_and_sort(client: TestClient, seed: Seed, pq_app: App) -> None:
    with Session(pq_app.engine) as session:
        consenting = [
            a.patient_id
            for a in session.scalars(
                select(Affiliation)
                .filter_by(organization_id=seed.orgs["own"], roi_consent_status="active")
                .order_by(Affiliation.patient_id)
            )
        ]
        session.execute(
            update(Affiliation)
            .where(Affiliation.patient_id == consenting[3])
            .values(last_practiceq_sync_at=NOW - timedelta(hours=1))
        )
        session.commit()
    a, b, c = consenting[:3]
    add_appointments(
        pq_app,
        {"patient_id": a, "start_time": denver(2025, 11, 16, 10, 0)},  # Sunday: this week
        {"patient_id": b, "start_time": denver(2025, 11, 12, 10, 0), "status": "no_show"},
        {"patient_id": c, "start_time": denver(2025, 11, 20, 10, 0)},  # next week
    )
    sign_in(client, "case_manager")
    this_week = row_ids(client.get("/?show=this_week").text)
    assert sorted(this_week) == sorted([str(a), str(b)])
    assert row_ids(client.get("/?show=missed").text) == [str(b)]
    no_upcoming = row_ids(client.get("/?show=no_upcoming").text)
    assert str(b) in no_upcoming and str(a) not in no_upcoming and str(c) not in no_upcoming
    assert str(seed.missing) not in no_upcoming  # no consent: no details to judge by
    assert row_ids(client.get("/?show=consent_expiring").text) == [str(seed.expired)]
    by_next = row_ids(client.get("/?sort=next").text)
    assert by_next[:2] == [str(a), str(c)] and len(by_next) == 12
    by_synced = row_ids(client.get("/?sort=synced").text)
    assert by_synced[-1] == str(consenting[3]) and len(by_synced) == 12
    page = client.get("/?show=missed&sort=next")
    assert "Showing: Missed recently (14 days), sorted by next appointment." in text_of(page.text)
    assert client.get("/?show=nonsense").status_code == 200
    assert client.get("/?page=0").status_code == 404


# -- since your last visit -------------------------------------------------------------------


def changes_panel(page: str) -> str | None:
    found = re.search(r'<section id="since-last-visit".*?</section>', page, re.DOTALL)
    return text_of(found.group(0)) if found else None


def test_since_your_last_visit_lists_synced_changes_until_dismissed(
    client: TestClient, seed: Seed, pq_app: App, simulator: SimulatorServer
) -> None:
    csrf = sign_in(client, "case_manager")
    assert changes_panel(client.get("/").text) is None  # a first visit: nothing to compare
    sync = f"/api/partner-dashboard/patients/{seed.consenting}/sync"
    assert client.post(sync, headers={"X-CSRF-Token": csrf}).status_code == 200
    with Session(pq_app.engine) as session:
        client_id = session.scalars(
            select(Patient.intakeq_client_id).filter_by(id=seed.consenting)
        ).one()
    pq_app.clock.advance(hours=1)  # type: ignore[attr-defined]
    client.post("/logout", data={"csrf_token": csrf})
    pq_app.clock.advance(hours=14)  # type: ignore[attr-defined]  # the next morning
    control = simulator.control_url + "/appointments"
    moved = httpx.post(
        control, json={"ClientId": client_id, "StartDateLocal": "2025-11-24T14:00:00"}
    )
    off = httpx.post(control, json={"ClientId": client_id, "StartDateLocal": "2025-11-25T10:00:00"})
    with open_client(pq_app) as other:  # the partner admin syncs overnight's bookings
        token = sign_in(other, "partner_admin")
        assert other.post(sync, headers={"X-CSRF-Token": token}).json()["summary"]["new"] == 2
        httpx.patch(
            f"{control}/{moved.json()['Id']}", json={"StartDateLocal": "2025-11-24T15:30:00"}
        )
        httpx.post(f"{control}/{off.json()['Id']}/cancel", json={})
        httpx.post(control, json={"ClientId": client_id, "StartDateLocal": "2025-11-26T09:00:00"})
        pq_app.clock.advance(seconds=61)  # type: ignore[attr-defined]  # (else the last answer)
        assert other.post(sync, headers={"X-CSRF-Token": token}).status_code == 200
    pq_app.clock.advance(hours=1)  # type: ignore[attr-defined]
    csrf = sign_in(client, "case_manager")
    panel = changes_panel(client.get("/").text)
    assert panel is not None
    assert "Since your last visit (5)" in panel
    assert "3 new, 1 rescheduled, 1 cancelled, 0 missed" in panel
    name = seed.names[seed.consenting]
    assert f"Rescheduled {name} Mon, Nov 24 at 3:30 PM" in panel
    assert f"Cancelled {name} Tue, Nov 25 at 10:00 AM" in panel
    assert changes_panel(client.get("/").text) == panel  # stays until dismissed
    done = client.post("/changes/dismiss", data={"csrf_token": csrf}, follow_redirects=False)
    assert done.status_code == 303
    assert changes_panel(client.get("/").text) is None


def test_the_casework_pages_send_a_strict_csp_and_hold_no_inline_script_or_style(
    client: TestClient, seed: Seed
) -> None:
    sign_in(client, "partner_admin")
    for path in (
        "/",
        "/?show=missed&sort=next",
        "/week",
        f"/patients/{seed.consenting}/attendance",
        "/calendar",
        "/organization",
    ):
        page = client.get(path)
        assert page.status_code == 200, path
        assert "unsafe-inline" not in page.headers["Content-Security-Policy"]
        assert INLINE.search(page.text) is None, path
        title = re.search(r"<title>(.*?)</title>", page.text, re.DOTALL)
        assert title is not None, path
        assert all(name not in title.group(1) for name in seed.names.values())
