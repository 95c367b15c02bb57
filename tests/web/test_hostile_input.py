"""NUL bytes and extreme dates answer 4xx everywhere: the HTML forms (search box, sign-in),
query strings (the staff filters) and the JSON API, never a 500."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from web_support import PASSWORD, USERS, Seed, open_client

from pqsync.bootstrap import App


def sign_in(client: TestClient, who: str) -> str:
    form = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token is not None
    client.post(
        "/login",
        data={"email": USERS[who], "password": PASSWORD, "csrf_token": token.group(1)},
        follow_redirects=False,
    )
    roster = client.get("/")
    csrf = re.search(r'<meta name="csrf-token" content="([^"]+)"', roster.text)
    assert csrf is not None
    return csrf.group(1)


@pytest.fixture
def staff(pq_app: App) -> TestClient:
    client = open_client(pq_app, raise_server_exceptions=False)
    client.csrf = sign_in(client, "staff_admin")  # type: ignore[attr-defined]
    return client


def test_a_nul_byte_in_the_search_box_is_4xx(staff: TestClient) -> None:
    answer = staff.post("/", data={"q": "ann\x00", "csrf_token": staff.csrf})  # type: ignore[attr-defined]
    assert 400 <= answer.status_code < 500, answer.status_code


def test_a_nul_byte_in_the_sign_in_email_is_4xx(pq_app: App) -> None:
    client = open_client(pq_app, raise_server_exceptions=False)
    form = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token is not None
    page = client.post(
        "/login",
        data={"email": "a\x00@b.org", "password": PASSWORD, "csrf_token": token.group(1)},
    )
    api = client.post("/api/auth/login", json={"email": "a\x00@b.org", "password": PASSWORD})
    assert 400 <= page.status_code < 500, page.status_code
    assert 400 <= api.status_code < 500, api.status_code


@pytest.mark.parametrize(
    "query",
    ["day=9999-12-31", "day=0001-01-01", "day=2025-11-15%00", "organization=%00", "status=%00"],
)
def test_extreme_dates_and_nul_bytes_in_the_staff_filters_are_4xx(
    staff: TestClient, query: str
) -> None:
    answer = staff.get(f"/staff/runs?{query}")
    assert 400 <= answer.status_code < 500, answer.status_code


@pytest.mark.parametrize(
    "path", ["/api/admin/sync-runs?day=9999-12-31", "/api/admin/sync-runs?day=%00"]
)
def test_extreme_dates_in_the_api_are_4xx_or_answered(
    staff: TestClient, seed: Seed, path: str
) -> None:
    answer = staff.get(path, headers=seed.bearer("staff_admin"))
    assert answer.status_code < 500, answer.status_code


def test_a_nul_byte_in_json_is_4xx(staff: TestClient, seed: Seed) -> None:
    answer = staff.post(
        f"/api/partner-dashboard/patients/{seed.consenting}/sync",
        headers=seed.bearer("staff_admin"),
        json={"dateRange": {"startDate": "2025-11-01\u0000", "endDate": "2025-11-30"}},
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "nul_byte"


@pytest.mark.parametrize(
    "query",
    [
        "end=9999-12-31",
        "start=9999-12-30&end=9999-12-31",
        "start=0001-01-01&end=0001-01-02",
        "end=0001-01-01",
    ],
)
@pytest.mark.parametrize("page", ["attendance", "attendance.csv"])
def test_extreme_dates_in_the_attendance_record_are_4xx(
    staff: TestClient, seed: Seed, page: str, query: str
) -> None:
    answer = staff.get(f"/patients/{seed.consenting}/{page}?{query}")
    assert 400 <= answer.status_code < 500, answer.status_code


@pytest.mark.parametrize("day", ["9999-12-31", "9999-12-28", "0001-01-01", "0001-01-03"])
def test_extreme_dates_in_the_week_page_are_4xx(staff: TestClient, seed: Seed, day: str) -> None:
    answer = staff.get(f"/week?org={seed.orgs['own']}&of={day}")
    assert 400 <= answer.status_code < 500, answer.status_code
