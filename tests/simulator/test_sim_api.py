"""The simulator's IntakeQ API over real HTTP: auth, filters, paging, order and writes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest

from intakeq_sim import ManualClock, SimulatorServer
from pqsync.domain.times import to_epoch_ms
from pqsync.settings import SIMULATOR_API_KEY

SWEENEY = "dr.sweeney@clinic.example"


def _all_pages(api: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    """Walk the pages as a correct client must: until a short page."""
    records: list[dict[str, Any]] = []
    page = 1
    while True:
        response = api.get("/appointments", params={**params, "page": page})
        assert response.status_code == 200
        batch = response.json()
        records.extend(batch)
        if len(batch) < 100:
            return records
        page += 1


def _ids(records: list[dict[str, Any]]) -> list[str]:
    return [r["Id"] for r in records]


def test_missing_or_wrong_key_is_refused_without_echoing_it(sim: SimulatorServer) -> None:
    missing = httpx.get(f"{sim.base_url}/appointments")
    wrong = httpx.get(f"{sim.base_url}/appointments", headers={"X-Auth-Key": "guess-123"})
    assert missing.status_code == wrong.status_code == 401
    assert "Message" in wrong.json()
    assert "guess-123" not in wrong.text
    assert SIMULATOR_API_KEY not in wrong.text


def test_another_configured_key(make_sim: Callable[..., SimulatorServer]) -> None:
    sim = make_sim(api_key="other-key")
    url = f"{sim.base_url}/appointments/settings"
    assert httpx.get(url, headers={"X-Auth-Key": SIMULATOR_API_KEY}).status_code == 401
    assert httpx.get(url, headers={"X-Auth-Key": "other-key"}).status_code == 200


def test_pages_hold_100_and_a_short_page_is_the_last(
    sim: SimulatorServer, api: httpx.Client
) -> None:
    heavy = sim.dataset.special.heavy
    start, end = sim.dataset.default_window()
    params = {"client": heavy.email, "startDate": start.isoformat(), "endDate": end.isoformat()}
    first = api.get("/appointments", params={**params, "page": 1}).json()
    second = api.get("/appointments", params={**params, "page": 2}).json()
    assert len(first) == 100
    assert 0 < len(second) < 100
    assert api.get("/appointments", params={**params, "page": 3}).json() == []
    # No page given means the first page only: everything past 100 is silently dropped.
    assert _ids(api.get("/appointments", params=params).json()) == _ids(first)
    expected = sim.dataset.appointments_in_window(start, end, {heavy.client_id})
    assert _ids(first + second) == [a.id for a in expected]


def test_listing_is_ordered_by_start_descending(api: httpx.Client) -> None:
    starts = [r["StartDate"] for r in _all_pages(api)]
    assert len(starts) > 300
    assert starts == sorted(starts, reverse=True)


def test_client_filter_is_a_partial_match_on_email_or_name(
    sim: SimulatorServer, api: httpx.Client
) -> None:
    special = sim.dataset.special
    by_email = _all_pages(api, client=special.email_substring.email)
    assert {r["ClientId"] for r in by_email} == {
        special.email_substring.client_id,
        special.email_superstring.client_id,
        special.impostor.client_id,
    }
    by_name = _all_pages(api, client="joANN")
    assert {r["ClientId"] for r in by_name} == {special.email_superstring.client_id}
    # Case differs from IntakeQ's, still found.
    mismatch = special.case_mismatch
    assert mismatch.directory_email is not None
    by_our_email = _all_pages(api, client=mismatch.directory_email)
    assert {r["ClientEmail"] for r in by_our_email} == {mismatch.email}


def test_plus_address_is_found_when_sent_encoded(sim: SimulatorServer, api: httpx.Client) -> None:
    plus = sim.dataset.special.plus_address
    assert {r["ClientId"] for r in _all_pages(api, client=plus.email)} == {plus.client_id}


def test_date_filter_uses_denver_local_dates(sim: SimulatorServer, api: httpx.Client) -> None:
    ann = sim.dataset.special.email_substring
    evening = sim.dataset.today + timedelta(days=3)  # Ann: 18:30 MDT, 00:30 UTC the next day
    next_day = evening + timedelta(days=1)

    def on(day: date) -> list[dict[str, Any]]:
        params = {"client": ann.email, "startDate": day.isoformat(), "endDate": day.isoformat()}
        return [r for r in _all_pages(api, **params) if r["ClientId"] == ann.client_id]

    [appointment] = [r for r in on(evening) if r["StartDateLocal"].endswith("T18:30:00")]
    assert appointment["StartDateIso"].startswith(next_day.isoformat())
    assert appointment["Id"] not in _ids(on(next_day))


def test_default_window_matches_the_ground_truth(sim: SimulatorServer, api: httpx.Client) -> None:
    start, end = sim.dataset.default_window()
    listed = _all_pages(api, startDate=start.isoformat(), endDate=end.isoformat())
    assert _ids(listed) == [a.id for a in sim.dataset.appointments_in_window(start, end)]


@pytest.mark.parametrize(
    "bad", ["2025-13-01", "10/24/2025", "2025-1-5", "yesterday", "9999-12-31", "0001-01-01"]
)
def test_malformed_dates_are_a_400(api: httpx.Client, bad: str) -> None:
    assert api.get("/appointments", params={"startDate": bad}).status_code == 400
    assert api.get("/appointments", params={"endDate": bad}).status_code == 400
    assert api.get("/appointments", params={"updatedSince": bad}).status_code == 400


@pytest.mark.parametrize("bad", ["0", "-1", "two"])
def test_bad_page_is_a_400(api: httpx.Client, bad: str) -> None:
    assert api.get("/appointments", params={"page": bad}).status_code == 400


def test_status_filter(api: httpx.Client) -> None:
    everything = _all_pages(api)
    missed = _all_pages(api, status="Missed")
    assert missed
    assert _ids(missed) == [r["Id"] for r in everything if r["Status"] == "Missed"]


def test_practitioner_email_is_an_exact_match(api: httpx.Client) -> None:
    everything = _all_pages(api)
    sweeney = _all_pages(api, practitionerEmail=SWEENEY)
    assert sweeney
    assert _ids(sweeney) == [r["Id"] for r in everything if r["PractitionerEmail"] == SWEENEY]
    assert api.get("/appointments", params={"practitionerEmail": "sweeney"}).json() == []


def test_updated_since_lists_what_changed(
    sim: SimulatorServer, api: httpx.Client, clock: ManualClock
) -> None:
    clock.advance(timedelta(days=2))
    target = api.get("/appointments").json()[5]["Id"]
    assert api.put("/appointments", json={"Id": target, "Status": "Confirmed"}).status_code == 200
    today = sim.dataset.today
    since = (today + timedelta(days=2)).isoformat()
    assert _ids(_all_pages(api, updatedSince=since)) == [target]
    earlier = _all_pages(api, updatedSince=today.isoformat())
    assert target in _ids(earlier)
    assert len(earlier) < len(_all_pages(api))


def test_deleted_appointments_vanish_and_are_listed_by_deleted_only(
    sim: SimulatorServer, api: httpx.Client, control: httpx.Client, clock: ManualClock
) -> None:
    recent_cutoff = to_epoch_ms(clock.now - timedelta(days=10))
    truth = control.get("/appointments").json()
    recently_deleted = [r["Id"] for r in truth if r["Deleted"] and r["DeletedAt"] >= recent_cutoff]
    assert len(recently_deleted) == 3  # a fourth was deleted too long ago to be listed
    assert _ids(_all_pages(api, deletedOnly="true")) == recently_deleted

    target = api.get("/appointments").json()[0]["Id"]
    assert control.post(f"/appointments/{target}/delete").status_code == 200
    assert api.get(f"/appointments/{target}").status_code == 404
    assert target not in _ids(_all_pages(api))
    assert target in _ids(_all_pages(api, deletedOnly="true"))

    clock.advance(timedelta(days=11))
    assert target not in _ids(_all_pages(api, deletedOnly="true"))
    assert control.post(f"/appointments/{target}/restore").status_code == 200
    assert api.get(f"/appointments/{target}").json()["Id"] == target


def test_get_one_appointment_and_404(sim: SimulatorServer, api: httpx.Client) -> None:
    listed = api.get("/appointments").json()[3]
    assert api.get(f"/appointments/{listed['Id']}").json() == listed
    missing = api.get("/appointments/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404


def test_settings(sim: SimulatorServer, api: httpx.Client) -> None:
    settings = api.get("/appointments/settings").json()
    assert {p["Email"] for p in settings["Practitioners"]} == {
        p.email for p in sim.dataset.practitioners
    }
    assert set(settings["Practitioners"][0]) == {
        "Id", "CompleteName", "FirstName", "LastName", "Email"
    }  # fmt: skip
    assert set(settings["Services"][0]) == {"Id", "Name", "Duration", "Price"}
    assert set(settings["Locations"][0]) == {"Id", "Name", "Address"}


def _booking(sim: SimulatorServer, **overrides: Any) -> dict[str, Any]:
    ds = sim.dataset
    body = {
        "PractitionerId": ds.mapped_practitioners[1].id,
        "ClientId": ds.special.email_substring.client_id,
        "ServiceId": ds.services[1].id,
        "LocationId": ds.locations[0].id,
        "Status": "Confirmed",
        "UtcDateTime": to_epoch_ms(datetime(2025, 11, 3, 17, 0, tzinfo=UTC)),
        "SendClientEmailNotification": False,
        "ReminderType": "Email",
    }
    return body | overrides


def test_create_appointment(sim: SimulatorServer, api: httpx.Client, clock: ManualClock) -> None:
    clock.advance(timedelta(hours=1))
    response = api.post("/appointments", json=_booking(sim))
    assert response.status_code == 200
    created = response.json()
    assert created["Id"]
    assert created["StartDateLocal"] == "2025-11-03T10:00:00"  # MST after the change
    assert created["LastModified"] == created["DateCreated"] == to_epoch_ms(clock.now)
    assert api.get(f"/appointments/{created['Id']}").json() == created
    day = date(2025, 11, 3).isoformat()
    listed = api.get("/appointments", params={"startDate": day, "endDate": day}).json()
    assert created["Id"] in _ids(listed)


@pytest.mark.parametrize(
    "overrides",
    [
        {"Status": "Missed"},
        {"ClientId": 999_999},
        {"PractitionerId": "nobody"},
        {"ServiceId": None},
        {"UtcDateTime": "tomorrow"},
    ],
)
def test_create_refuses_bad_bookings(
    sim: SimulatorServer, api: httpx.Client, overrides: dict[str, Any]
) -> None:
    assert api.post("/appointments", json=_booking(sim, **overrides)).status_code == 400


def test_update_reschedules_and_reassigns(
    sim: SimulatorServer, api: httpx.Client, clock: ManualClock
) -> None:
    ds = sim.dataset
    original = api.get("/appointments").json()[0]
    clock.advance(timedelta(minutes=5))
    new_start = datetime(2025, 10, 30, 15, 0, tzinfo=UTC)
    locum = ds.special.unmapped_practitioner
    body = {
        "Id": original["Id"],
        "UtcDateTime": to_epoch_ms(new_start),
        "PractitionerId": locum.id,
        "ServiceId": ds.services[2].id,
        "LocationId": ds.locations[1].id,
    }
    updated = api.put("/appointments", json=body).json()
    assert updated["StartDate"] == to_epoch_ms(new_start)
    assert updated["PractitionerEmail"] == locum.email
    assert updated["ServiceName"] == ds.services[2].name
    assert updated["Duration"] == ds.services[2].duration
    assert updated["LastModified"] == to_epoch_ms(clock.now)
    listed = api.get("/appointments", params={"startDate": "2025-10-30", "endDate": "2025-10-30"})
    assert original["Id"] in _ids(listed.json())
    unknown = api.put("/appointments", json={"Id": "nope", "Status": "Confirmed"})
    assert unknown.status_code == 404


def test_cancellation(api: httpx.Client, clock: ManualClock) -> None:
    target = api.get("/appointments", params={"status": "Confirmed"}).json()[0]["Id"]
    response = api.post(
        "/appointments/cancellation", json={"AppointmentId": target, "Reason": "Client request"}
    )
    assert response.status_code == 200
    canceled = api.get(f"/appointments/{target}").json()
    assert canceled["Status"] == "Canceled"
    assert canceled["FullCancellationReason"] == "Client request"
    assert canceled["CancellationDate"] == to_epoch_ms(clock.now)


def test_clients_search_is_partial_and_paged(make_sim: Callable[..., SimulatorServer]) -> None:
    sim = make_sim(patients=150)
    special = sim.dataset.special
    with httpx.Client(base_url=sim.base_url, headers={"X-Auth-Key": SIMULATOR_API_KEY}) as api:
        found = api.get("/clients", params={"search": special.email_substring.email}).json()
        assert {c["ClientId"] for c in found} == {
            special.email_substring.client_id,
            special.email_superstring.client_id,
            special.impostor.client_id,
        }
        assert {"ClientId", "Name", "Email"} <= set(found[0])
        first = api.get("/clients", params={"page": 1}).json()
        second = api.get("/clients", params={"page": 2}).json()
    assert len(first) == 100
    assert len(first) + len(second) == len(sim.dataset.clients)


def test_unknown_routes(api: httpx.Client, sim: SimulatorServer) -> None:
    assert api.get("/invoices").status_code == 404
    assert api.delete("/appointments").status_code == 405
    assert httpx.get(f"{sim.base_url.removesuffix('/api/v1')}/elsewhere").status_code == 404


def test_a_large_practice_pages_like_a_small_one(make_sim: Callable[..., SimulatorServer]) -> None:
    sim = make_sim(appointments=100_000)
    ds = sim.dataset
    week_start, week_end = ds.today, ds.today + timedelta(days=6)
    expected = ds.appointments_in_window(week_start, week_end, {ds.special.plus_address.client_id})
    with httpx.Client(base_url=sim.base_url, headers={"X-Auth-Key": SIMULATOR_API_KEY}) as api:
        listed = _all_pages(
            api,
            client=ds.special.plus_address.email,
            startDate=week_start.isoformat(),
            endDate=week_end.isoformat(),
        )
        last_page = api.get("/appointments", params={"page": 999}).json()
    assert _ids(listed) == [a.id for a in expected]
    assert len(last_page) == 100  # 100,000 live appointments minus a few deleted: page 999 is full
