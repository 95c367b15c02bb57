"""The calendar feed: a secret per-user address read by two iCalendar parsers, right across a
DST change, cheap to poll (ETag, 304), consent-gated, and gone after a reset or deactivation.
And each resident's own address (on the resident's page): the same, and 404 the moment the
resident's consent ends, the resident or the user leaves, or the user's address is reset."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, date, datetime

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
from pqsync.services.directory import import_directory, parse_directory
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


def resident_address(client: TestClient, patient: uuid.UUID, who: str = "case_manager") -> str:
    """The path of the user's own address for one resident, read from the resident's page."""
    sign_in(client, who)
    page = client.get(f"/patients/{patient}")
    assert page.status_code == 200
    found = re.search(r'id="resident-feed"[^>]*value="[^"]*(/calendar/[^"]+\.ics)"', page.text)
    assert found is not None, "no resident calendar address on the page"
    client.cookies.clear()
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


# -- one resident's own address ---------------------------------------------------------------


def test_a_resident_s_own_feed_parses_in_two_parsers_and_holds_only_them(
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
        {"patient_id": seed.expired, "start_time": denver(2025, 10, 31, 9, 0)},  # no consent
        {"patient_id": seed.other_patient, "start_time": denver(2025, 10, 31, 10, 0)},
    )  # fmt: skip
    new_address(client)
    address = resident_address(client, seed.consenting)
    first, last = seed.names[seed.consenting].split(" ", 1)
    assert re.fullmatch(rf"/calendar/calr_[A-Za-z0-9_-]+/residents/{seed.consenting}\.ics", address)
    assert first.lower() not in address.lower() and last.lower() not in address.lower()
    assert "@" not in address

    answer = client.get(address)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/calendar")
    calendar = icalendar.Calendar.from_ical(answer.content)
    assert str(calendar["x-wr-calname"]) == f"{first} {last[:1]}.: appointments (First Step House)"
    events = list(calendar.walk("VEVENT"))
    utc_starts = sorted(e.decoded("dtstart").astimezone(UTC) for e in events)
    assert utc_starts == [
        datetime(2025, 10, 30, 15, 0, tzinfo=UTC),  # 9:00 MDT
        datetime(2025, 11, 6, 16, 0, tzinfo=UTC),  # 9:00 MST, after the change
    ]
    assert all(str(e["summary"]).startswith(f"{first} {last[:1]}.") for e in events)
    assert last not in answer.text
    for other in (seed.expired, seed.other_patient):
        assert seed.names[other].split()[0] not in answer.text
    assert {str(e.get("location", "")) for e in events} == {"Main clinic", ""}
    descriptions = sorted(str(e["description"]) for e in events)
    assert descriptions[0].startswith("Provider: ")
    assert any("Awaiting confirmation" in d for d in descriptions)

    parsed = vobject.readOne(answer.text)
    second = sorted(v.dtstart.value.astimezone(UTC) for v in parsed.vevent_list)
    assert second == utc_starts
    assert all(v.dtstart.value.astimezone(DENVER).hour == 9 for v in parsed.vevent_list)

    etag = answer.headers["etag"]
    again = client.get(address, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    add_appointments(pq_app, {"patient_id": seed.expired, "start_time": denver(2025, 11, 3, 9)})
    unchanged = client.get(address, headers={"If-None-Match": etag})
    assert unchanged.status_code == 304  # another resident's new appointment changes nothing
    add_appointments(pq_app, {"patient_id": seed.consenting, "start_time": denver(2025, 11, 3, 9)})
    changed = client.get(address, headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert len(starts(changed.content)) == 3
    with Session(pq_app.engine) as session:  # exported: in the history, once that day
        views = [e.view for e in access_for_patient(session, seed.consenting)]
        assert views.count("calendar_feed") == 1
        assert "calendar_feed" not in [e.view for e in access_for_patient(session, seed.expired)]


def test_a_resident_s_feed_is_404_once_the_consent_is_revoked_or_expires_or_they_leave(
    client: TestClient, seed: Seed, pq_app: App, clock: FakeClock
) -> None:
    clock.now = datetime(2025, 11, 10, 18, 0, tzinfo=UTC)  # Nov 10 in Denver
    add_appointments(pq_app, {"patient_id": seed.consenting, "start_time": denver(2025, 11, 20, 9)})
    organization = new_address(client)
    address = resident_address(client, seed.consenting)
    assert len(starts(client.get(address).content)) == 1

    set_consent(pq_app, seed.consenting, seed.orgs["own"], "revoked", None)
    revoked = client.get(address)
    assert revoked.status_code == 404 and revoked.content == b""
    # The organisation's feed goes on for the others, without this resident.
    assert client.get(organization).status_code == 200

    set_consent(pq_app, seed.consenting, seed.orgs["own"], "active", date(2025, 11, 10))
    assert client.get(address).status_code == 200  # good through its last day
    clock.now = datetime(2025, 11, 11, 6, 30, tzinfo=UTC)  # Nov 11 in UTC, 23:30 Nov 10 in Denver
    assert client.get(address).status_code == 200
    clock.now = datetime(2025, 11, 11, 7, 30, tzinfo=UTC)  # 00:30 on Nov 11 in Denver
    assert client.get(address).status_code == 404
    assert client.get(organization).status_code == 200

    set_consent(pq_app, seed.consenting, seed.orgs["own"], "active", None)
    assert client.get(address).status_code == 200
    with Session(pq_app.engine) as session:  # the resident leaves the organisation
        session.execute(
            delete(Affiliation).where(
                Affiliation.patient_id == seed.consenting,
                Affiliation.organization_id == seed.orgs["own"],
            )
        )
        session.commit()
    assert client.get(address).status_code == 404


def test_a_reset_or_stopped_address_ends_the_resident_addresses_too(
    client: TestClient, seed: Seed, pq_app: App
) -> None:
    new_address(client)
    old = resident_address(client, seed.consenting)
    assert client.get(old).status_code == 200
    new_address(client)  # reset
    assert client.get(old).status_code == 404
    new = resident_address(client, seed.consenting)
    assert new != old
    assert client.get(new).status_code == 200
    csrf = sign_in(client, "case_manager")
    assert client.post("/calendar", data={"csrf_token": csrf, "action": "stop"}).status_code == 200
    page = client.get(f"/patients/{seed.consenting}")
    assert 'id="resident-feed"' not in page.text
    assert 'make <a href="/calendar">your calendar address</a> first' in page.text
    client.cookies.clear()
    assert client.get(new).status_code == 404


def test_a_deactivated_user_s_feeds_answer_404_and_stay_gone_when_they_come_back(
    client: TestClient, seed: Seed, pq_app: App, clock: FakeClock
) -> None:
    add_appointments(pq_app, {"patient_id": seed.consenting, "start_time": denver(2025, 11, 20, 9)})
    organization = new_address(client)
    resident = resident_address(client, seed.consenting)
    assert client.get(organization).status_code == 200
    assert client.get(resident).status_code == 200
    with Session(pq_app.engine) as session:
        user = session.scalars(select(PartnerUser).filter_by(email=USERS["case_manager"])).one()
        deactivate_user(session, user.id, by="test", now=clock.now)
    for address in (organization, resident):
        answer = client.get(address)
        assert answer.status_code == 404 and answer.content == b""  # not an empty calendar
    with Session(pq_app.engine) as session:  # back again (as a directory import does)
        user = session.scalars(select(PartnerUser).filter_by(email=USERS["case_manager"])).one()
        user.is_active = True
        session.commit()
    assert client.get(organization).status_code == 404
    assert client.get(resident).status_code == 404


def test_a_user_moved_to_another_organisation_loses_the_old_feeds(
    client: TestClient, seed: Seed, pq_app: App
) -> None:
    """The user's affiliation with the organisation ends (the directory file names them in
    another one): neither address goes on, with the new organisation's residents or the old."""
    add_appointments(
        pq_app,
        {"patient_id": seed.consenting, "start_time": denver(2025, 11, 20, 9)},
        {"patient_id": seed.other_patient, "start_time": denver(2025, 11, 20, 10)},
    )
    organization = new_address(client)
    resident = resident_address(client, seed.consenting)
    assert client.get(organization).status_code == 200
    moved = {
        "partner_users": [
            {"email": USERS["case_manager"], "name": "Jordan", "organization": "harbor-house",
             "role": "case_manager"}
        ]
    }  # fmt: skip
    import_directory(pq_app.engine, parse_directory(json.dumps(moved)))
    for address in (organization, resident):
        answer = client.get(address)
        assert answer.status_code == 404 and answer.content == b""
    assert seed.names[seed.other_patient].split()[0] not in client.get(organization).text
