"""The calendar feed: a secret per-user address read by two iCalendar parsers, right across a
DST change, cheap to poll (ETag, 304), consent-gated, and gone after a reset or deactivation."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import icalendar
import vobject
from casework_support import DENVER, add_appointments, denver, set_consent
from fastapi.testclient import TestClient
from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from test_dashboard_pages import sign_in
from web_support import USERS, FakeClock, Seed

from pqsync.bootstrap import App
from pqsync.db.tables import Affiliation, PartnerUser
from pqsync.services.access import access_for_patient
from pqsync.services.users import deactivate_user

BEFORE_DST_ENDS = datetime(2025, 10, 25, 18, 0, tzinfo=UTC)  # DST ends on Nov 2, 2025


def new_address(client: TestClient, who: str = "case_manager") -> str:
    csrf = sign_in(client, who)
    page = client.post("/calendar", data={"csrf_token": csrf, "action": "reset"})
    assert page.status_code == 200
    found = re.search(r'value="[^"]*(/calendar/[^"]+\.ics)"', page.text)
    assert found is not None
    client.cookies.clear()  # the feed is read without a session
    return found.group(1)


def starts(body: bytes) -> list[datetime]:
    calendar = icalendar.Calendar.from_ical(body)
    return sorted(event.decoded("dtstart") for event in calendar.walk("VEVENT"))


def test_the_feed_parses_in_two_parsers_with_the_right_times_across_dst(
    client: TestClient, seed: Seed, pq_app: App, clock: FakeClock
) -> None:
    clock.now = BEFORE_DST_ENDS
    add_appointments(
        pq_app,
        {"patient_id": seed.consenting, "start_time": denver(2025, 10, 30, 9, 0),
         "location_name": "Main clinic"},
        {"patient_id": seed.consenting, "start_time": denver(2025, 11, 6, 9, 0),
         "status": "scheduled"},
        {"patient_id": seed.consenting, "start_time": denver(2025, 11, 7, 9, 0),
         "status": "cancelled"},
        {"patient_id": seed.consenting, "start_time": denver(2025, 10, 20, 9, 0)},  # past
        {"patient_id": seed.expired, "start_time": denver(2025, 10, 31, 9, 0)},  # no consent
    )  # fmt: skip
    address = new_address(client)
    answer = client.get(address)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/calendar")
    first, last = seed.names[seed.consenting].split(" ", 1)

    calendar = icalendar.Calendar.from_ical(answer.content)
    events = list(calendar.walk("VEVENT"))
    assert len(events) == 2
    utc_starts = sorted(e.decoded("dtstart").astimezone(UTC) for e in events)
    assert utc_starts == [
        datetime(2025, 10, 30, 15, 0, tzinfo=UTC),  # 9:00 MDT (-06:00)
        datetime(2025, 11, 6, 16, 0, tzinfo=UTC),  # 9:00 MST (-07:00)
    ]
    assert all(e.decoded("dtstart").astimezone(DENVER).hour == 9 for e in events)
    summaries = {str(e["summary"]) for e in events}
    assert all(s.startswith(f"{first} {last[:1]}.") for s in summaries)
    assert all(last not in s for s in summaries)
    assert seed.names[seed.expired].split()[0] not in answer.text
    assert {str(e.get("location", "")) for e in events} == {"Main clinic", ""}

    parsed = vobject.readOne(answer.text)
    second = sorted(v.dtstart.value.astimezone(UTC) for v in parsed.vevent_list)
    assert second == utc_starts
    assert all(v.dtstart.value.astimezone(DENVER).hour == 9 for v in parsed.vevent_list)


def test_an_unchanged_feed_is_a_304_and_a_change_a_new_etag(
    client: TestClient, seed: Seed, pq_app: App
) -> None:
    add_appointments(pq_app, {"patient_id": seed.consenting, "start_time": denver(2025, 11, 20, 9)})
    address = new_address(client)
    first = client.get(address)
    etag = first.headers["etag"]
    again = client.get(address, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    add_appointments(pq_app, {"patient_id": seed.consenting, "start_time": denver(2025, 11, 21, 9)})
    changed = client.get(address, headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert len(starts(changed.content)) == 2


def test_a_revoked_consent_leaves_the_feed_at_once(
    client: TestClient, seed: Seed, pq_app: App
) -> None:
    add_appointments(pq_app, {"patient_id": seed.consenting, "start_time": denver(2025, 11, 20, 9)})
    address = new_address(client)
    assert len(starts(client.get(address).content)) == 1
    set_consent(pq_app, seed.consenting, seed.orgs["own"], "revoked", None)
    answer = client.get(address)
    assert answer.status_code == 200
    assert starts(answer.content) == []
    assert seed.names[seed.consenting].split()[0] not in answer.text
    set_consent(pq_app, seed.consenting, seed.orgs["own"], "active", None)
    assert len(starts(client.get(address).content)) == 1
    with Session(pq_app.engine) as session:  # the resident leaves the organisation
        session.execute(
            delete(Affiliation).where(
                Affiliation.patient_id == seed.consenting,
                Affiliation.organization_id == seed.orgs["own"],
            )
        )
        session.commit()
    assert starts(client.get(address).content) == []


def test_a_reset_address_and_a_deactivated_user_s_address_answer_404(
    client: TestClient, seed: Seed, pq_app: App, clock: FakeClock
) -> None:
    old = new_address(client)
    assert client.get(old).status_code == 200
    new = new_address(client)
    assert new != old
    assert client.get(old).status_code == 404
    assert client.get(new).status_code == 200
    assert client.get("/calendar/cal_made-up.ics").status_code == 404
    with Session(pq_app.engine) as session:
        user_id = session.scalars(
            select(PartnerUser.id).filter_by(email=USERS["case_manager"])
        ).one()
        deactivate_user(session, user_id, by="test", now=clock.now)
    assert client.get(new).status_code == 404


def test_the_feed_is_in_the_access_record_once_a_day_not_at_every_poll(
    client: TestClient, seed: Seed, pq_app: App, clock: FakeClock
) -> None:
    add_appointments(pq_app, {"patient_id": seed.consenting, "start_time": denver(2025, 11, 20, 9)})
    address = new_address(client)
    client.get(address)
    clock.advance(minutes=15)
    client.get(address)
    with Session(pq_app.engine) as session:
        views = [e.view for e in access_for_patient(session, seed.consenting)]
    assert views.count("calendar_feed") == 1
    clock.advance(days=1)
    client.get(address)
    with Session(pq_app.engine) as session:
        views = [e.view for e in access_for_patient(session, seed.consenting)]
    assert views.count("calendar_feed") == 2


def test_staff_have_no_feed_and_the_page_needs_its_token(client: TestClient) -> None:
    csrf = sign_in(client, "staff_admin")
    assert client.get("/calendar").status_code == 403
    assert client.post("/calendar", data={"csrf_token": csrf}).status_code == 403
    client.cookies.clear()
    sign_in(client, "viewer")
    assert "no calendar address yet" in client.get("/calendar").text
    assert client.post("/calendar", data={"csrf_token": "forged"}).status_code == 403
