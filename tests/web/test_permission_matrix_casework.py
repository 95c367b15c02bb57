"""The permission matrix for the casework pages, exports and the calendar feed: every role
signed in through the form (these are pages, not the JSON API), each organisation's patient,
and a patient without consent. Another organisation's patient is 404 (never told apart from
one that does not exist); a patient without active consent is 403 to partners; nobody
signed in goes to the sign-in page. The bodies hold only the caller's organisation. The
calendar addresses (no cookie) answer only for the caller's own consenting residents."""

from __future__ import annotations

import re
import uuid

import pytest
from fastapi.testclient import TestClient
from test_dashboard_pages import sign_in
from web_support import Seed

CALLERS = ("staff_admin", "partner_admin", "case_manager", "viewer", "other_org_admin", "anonymous")

ENDPOINTS = {
    "week": "/week?org={org}",
    "roster-csv": "/roster.csv?org={org}",
    "attendance": "/patients/{patient}/attendance",
    "attendance-csv": "/patients/{patient}/attendance.csv",
    "calendar": "/calendar",
    "organization": "/organization",
}
# own/other: aimed at the caller's organisation (or its consenting patient) or the other's;
# "nc": the caller's organisation's patient without consent (First Step House's expired).
MATRIX: dict[str, tuple[str, ...]] = {
    # endpoint          staff_admin  partner_admin case_manager viewer   other_org  anonymous
    "week":           ("200/200",   "200/own",    "200/own",   "200/own", "200/own", "303/303"),
    "roster-csv":     ("200/200",   "200/own",    "200/own",   "200/own", "200/own", "303/303"),
    "attendance":     ("200/200",   "200/404",    "200/404",   "200/404", "200/404", "303/303"),
    "attendance-csv": ("200/200",   "200/404",    "200/404",   "200/404", "200/404", "303/303"),
    "calendar":       ("403",       "200",        "200",       "200",     "200",     "303"),
    "organization":   ("403",       "200",        "403",       "403",     "200",     "303"),
}  # fmt: skip
NO_CONSENT = {
    "staff_admin": 200,
    "partner_admin": 403,
    "case_manager": 403,
    "viewer": 403,
    "anonymous": 303,
}


def _cells() -> list[tuple[str, str, str, str]]:
    cells = []
    for endpoint, row in MATRIX.items():
        for caller, expected in zip(CALLERS, row, strict=True):
            parts = expected.split("/")
            for target, status in zip(("own", "other"), parts, strict=False):
                cells.append((endpoint, caller, target, status))
    return cells


@pytest.fixture(scope="module")
def signed_in(module_client: TestClient) -> dict[str, dict[str, str]]:
    """Each caller's cookies, signed in once through the form."""
    cookies = {}
    for caller in CALLERS:
        module_client.cookies.clear()
        if caller != "anonymous":
            sign_in(module_client, caller)
        cookies[caller] = dict(module_client.cookies)
    module_client.cookies.clear()
    return cookies


def _get(client: TestClient, cookies: dict[str, str], url: str) -> tuple[int, str]:
    client.cookies.clear()
    for name, value in cookies.items():
        client.cookies.set(name, value)
    answer = client.get(url, follow_redirects=False)
    return answer.status_code, answer.text


@pytest.mark.parametrize(
    ("endpoint", "caller", "target", "expected"),
    _cells(),
    ids=[f"{e}|{c}|{t}" for e, c, t, _ in _cells()],
)
def test_casework_permission_matrix(
    module_client: TestClient,
    signed_in: dict[str, dict[str, str]],
    seed: Seed,
    endpoint: str,
    caller: str,
    target: str,
    expected: str,
) -> None:
    home = "other" if caller == "other_org_admin" else "own"
    aimed = home if target == "own" else ("own" if home == "other" else "other")
    patient = seed.consenting if aimed == "own" else seed.other_patient
    url = ENDPOINTS[endpoint].format(org=seed.orgs[aimed], patient=patient)
    status, body = _get(module_client, signed_in[caller], url)
    if expected == "own":  # a partner's `org` is always their own organisation
        assert status == 200
        foreign = seed.names[seed.consenting] if home == "other" else "Harbor House"
        assert foreign not in body
        return
    assert status == int(expected), body[:300]
    if status == 200 and caller != "staff_admin":
        other_org_names = ("First Step House",) if home == "other" else ("Harbor House",)
        assert all(name not in body for name in other_org_names)


@pytest.mark.parametrize("caller", list(NO_CONSENT))
@pytest.mark.parametrize("endpoint", ["attendance", "attendance-csv"])
def test_no_record_of_a_patient_without_consent_but_for_staff(
    module_client: TestClient,
    signed_in: dict[str, dict[str, str]],
    seed: Seed,
    endpoint: str,
    caller: str,
) -> None:
    url = ENDPOINTS[endpoint].format(patient=seed.expired, org="")
    status, _body = _get(module_client, signed_in[caller], url)
    assert status == NO_CONSENT[caller]


def test_a_feed_address_that_was_never_made_is_404(module_client: TestClient) -> None:
    module_client.cookies.clear()
    for token in ("cal_nothing", "x", "cal_" + "A" * 43):
        assert module_client.get(f"/calendar/{token}.ics").status_code == 404


# -- each resident's own calendar address -----------------------------------------------------

RESIDENT_FEED = re.compile(r'id="resident-feed"[^>]*value="[^"]*(/calendar/calr_[^/"]+/residents/)')


def _resident_address(
    client: TestClient, cookies: dict[str, str], patient: uuid.UUID
) -> tuple[int, str | None]:
    """The patient page's status and the caller's address for that resident, if shown."""
    client.cookies.clear()
    for name, value in cookies.items():
        client.cookies.set(name, value)
    page = client.get(f"/patients/{patient}", follow_redirects=False)
    found = RESIDENT_FEED.search(page.text)
    return page.status_code, (found.group(1) + f"{patient}.ics") if found else None


@pytest.mark.parametrize("caller", ["partner_admin", "case_manager", "viewer", "other_org_admin"])
def test_a_resident_address_only_for_one_s_own_consenting_residents(
    client: TestClient, seed: Seed, caller: str
) -> None:
    """Every partner role gets an address for its organisation's consenting resident; none
    for a resident without consent (the page shows none, and the secret made for another
    resident does not open theirs), nor for another organisation's resident (whose page is
    404, and a secret carried over to their id is 404 too)."""
    csrf = sign_in(client, caller)
    assert client.post("/calendar", data={"csrf_token": csrf, "action": "reset"}).status_code == 200
    cookies = dict(client.cookies)
    own = seed.other_patient if caller == "other_org_admin" else seed.consenting
    foreign = seed.consenting if caller == "other_org_admin" else seed.other_patient
    status, address = _resident_address(client, cookies, own)
    assert status == 200 and address is not None
    client.cookies.clear()
    assert client.get(address).status_code == 200
    secret_path = address.rsplit("/", 1)[0]
    assert client.get(f"{secret_path}/{foreign}.ics").status_code == 404
    status, shown = _resident_address(client, cookies, foreign)
    assert status == 404 and shown is None
    if caller != "other_org_admin":
        status, shown = _resident_address(client, cookies, seed.expired)
        assert status == 200 and shown is None  # no consent: no address
        client.cookies.clear()
        assert client.get(f"{secret_path}/{seed.expired}.ics").status_code == 404


def test_staff_see_no_resident_address(client: TestClient, seed: Seed) -> None:
    sign_in(client, "staff_admin")
    page = client.get(f"/patients/{seed.consenting}")
    assert page.status_code == 200 and 'id="resident-feed"' not in page.text
    assert "your calendar address" not in page.text


def test_a_resident_feed_address_that_was_never_made_is_404(
    module_client: TestClient, seed: Seed
) -> None:
    module_client.cookies.clear()
    for secret in ("calr_nothing", "cal_nothing", "x", "calr_" + "A" * 43):
        for patient in (seed.consenting, "not-a-uuid"):
            url = f"/calendar/{secret}/residents/{patient}.ics"
            assert module_client.get(url).status_code == 404
