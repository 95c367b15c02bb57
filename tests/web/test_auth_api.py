"""Logging in and out, session cookies, CSRF, bearer tokens and login throttling."""

from __future__ import annotations

from collections.abc import Callable
from http.cookies import SimpleCookie
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from web_support import PASSWORD, USERS, FakeClock, Seed, open_client

from pqsync.bootstrap import App
from pqsync.db.tables import LoginAttempt, PartnerUser
from pqsync.services.users import revoke_tokens

LOGIN = "/api/auth/login"
ME = "/api/auth/me"
LOGOUT = "/api/auth/logout"


def login(
    client: TestClient, who: str = "case_manager", password: str = PASSWORD
) -> dict[str, Any]:
    response = client.post(LOGIN, json={"email": USERS[who], "password": password})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def session_cookie(response_headers: list[str]) -> SimpleCookie:
    cookie: SimpleCookie = SimpleCookie()
    for header in response_headers:
        cookie.load(header)
    return cookie


def test_login_sets_a_locked_down_session_cookie(client: TestClient) -> None:
    response = client.post(LOGIN, json={"email": USERS["viewer"], "password": PASSWORD})

    assert response.status_code == 200
    cookie = session_cookie(response.headers.get_list("set-cookie"))["pqsync_session"]
    assert cookie["httponly"] is True
    assert cookie["secure"] is True
    assert cookie["samesite"].lower() == "lax"
    assert cookie["path"] == "/"
    body = response.json()
    assert body["user"]["email"] == USERS["viewer"]
    assert body["user"]["role"] == "viewer"
    assert body["user"]["organizationName"] == "First Step House"
    assert len(body["csrfToken"]) >= 32


def test_the_cookie_is_not_secure_in_development(build_app: Callable[..., App]) -> None:
    with open_client(build_app(PQSYNC_ENV="development")) as client:
        response = client.post(LOGIN, json={"email": USERS["viewer"], "password": PASSWORD})

    cookie = session_cookie(response.headers.get_list("set-cookie"))["pqsync_session"]
    assert cookie["secure"] == ""
    assert cookie["httponly"] is True


def test_a_logged_in_user_reads_with_the_cookie_alone(client: TestClient) -> None:
    login(client)

    me = client.get(ME)
    roster = client.get("/api/partner-dashboard/patients")

    assert me.status_code == 200
    assert me.json()["user"]["name"] == "Jordan Ames"
    assert roster.status_code == 200


def test_cookie_posts_need_the_csrf_token(client: TestClient, seed: Seed) -> None:
    csrf = login(client)["csrfToken"]
    url = f"/api/partner-dashboard/patients/{seed.consenting}/sync"

    missing = client.post(url)
    wrong = client.post(url, headers={"X-CSRF-Token": csrf[:-1] + "x"})
    right = client.post(url, headers={"X-CSRF-Token": csrf})

    assert missing.status_code == wrong.status_code == 403
    assert missing.json()["error"]["code"] == "csrf_failed"
    assert right.status_code == 200


def test_bearer_requests_need_no_csrf_token(client: TestClient, seed: Seed) -> None:
    response = client.post(
        f"/api/partner-dashboard/patients/{seed.consenting}/sync",
        headers=seed.bearer("case_manager"),
    )

    assert response.status_code == 200


def test_logout_ends_the_session(client: TestClient) -> None:
    csrf = login(client)["csrfToken"]
    cookie = client.cookies["pqsync_session"]

    without_csrf = client.post(LOGOUT)
    logged_out = client.post(LOGOUT, headers={"X-CSRF-Token": csrf})
    client.cookies.set("pqsync_session", cookie)  # a copy kept by an attacker
    replayed = client.get(ME)

    assert without_csrf.status_code == 403
    assert logged_out.status_code == 204
    assert 'pqsync_session=""' in logged_out.headers["set-cookie"]
    assert replayed.status_code == 401


def test_sessions_expire_after_twelve_hours(client: TestClient, clock: FakeClock) -> None:
    login(client)
    clock.advance(hours=12, seconds=1)

    assert client.get(ME).status_code == 401


@pytest.mark.parametrize(
    ("email", "password"),
    [(USERS["viewer"], "wrong password"), ("nobody@nowhere.example", PASSWORD)],
)
def test_a_wrong_login_says_only_that_it_is_wrong(
    client: TestClient, email: str, password: str
) -> None:
    response = client.post(LOGIN, json={"email": email, "password": password})

    assert response.status_code == 401
    assert response.json() == {
        "error": {"code": "invalid_credentials", "message": "wrong email or password"}
    }
    assert "set-cookie" not in response.headers


def test_a_deactivated_user_cannot_log_in_or_use_tokens(
    client: TestClient, pq_app: App, seed: Seed
) -> None:
    with Session(pq_app.engine) as session:
        session.execute(
            update(PartnerUser).where(PartnerUser.email == USERS["viewer"]).values(is_active=False)
        )
        session.commit()

    response = client.post(LOGIN, json={"email": USERS["viewer"], "password": PASSWORD})

    assert response.status_code == 401
    assert client.get(ME, headers=seed.bearer("viewer")).status_code == 401


def test_a_revoked_token_stops_working(client: TestClient, pq_app: App, seed: Seed) -> None:
    assert client.get(ME, headers=seed.bearer("viewer")).status_code == 200
    with Session(pq_app.engine) as session:
        assert revoke_tokens(session, USERS["viewer"], now=pq_app.clock()) == 1

    response = client.get(ME, headers=seed.bearer("viewer"))

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "authorization", ["Bearer", "Bearer not-a-token", "Basic dXNlcjpwYXNz", "pqs_abc"]
)
def test_bad_authorization_headers_are_401(module_client: TestClient, authorization: str) -> None:
    response = module_client.get(ME, headers={"Authorization": authorization})

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"


# -- throttling ------------------------------------------------------------------------------


def fail_logins(client: TestClient, count: int, email: str = USERS["viewer"]) -> None:
    for _ in range(count):
        response = client.post(LOGIN, json={"email": email, "password": "guess"})
        assert response.status_code == 401


def attempt(client: TestClient, who: str = "viewer", password: str = PASSWORD) -> Any:
    return client.post(LOGIN, json={"email": USERS[who], "password": password})


def test_failures_back_off_one_address_for_one_account_only(pq_app: App, clock: FakeClock) -> None:
    with (
        open_client(pq_app, "198.51.100.1") as guesser,
        open_client(pq_app, "198.51.100.2") as elsewhere,
    ):
        fail_logins(guesser, 3)
        clock.advance(minutes=5)
        fail_logins(guesser, 2)

        waiting = attempt(guesser)
        other_account = attempt(guesser, "case_manager")
        other_address = attempt(elsewhere)
        clock.advance(minutes=1)
        after_the_wait = attempt(guesser)

    assert waiting.status_code == 429
    assert waiting.json()["error"]["code"] == "too_many_attempts"
    assert waiting.json()["error"]["retryAt"] == "2025-11-15T21:09:00Z"
    assert "try again after 2025-11-15T21:09:00+00:00" in waiting.json()["error"]["message"]
    assert waiting.headers["Retry-After"] == "60"
    assert other_account.status_code == 200
    assert other_address.status_code == 200
    assert after_the_wait.status_code == 200


def test_the_back_off_doubles_with_each_further_failure(
    client: TestClient, clock: FakeClock
) -> None:
    fail_logins(client, 5)
    clock.advance(minutes=1)
    fail_logins(client, 1)

    waiting = attempt(client)

    assert waiting.status_code == 429
    assert waiting.headers["Retry-After"] == "120"


def test_a_known_device_signs_in_while_its_account_is_attacked(
    pq_app: App, clock: FakeClock
) -> None:
    with open_client(pq_app, "198.51.100.9") as users_browser:
        assert attempt(users_browser).status_code == 200
        clock.advance(seconds=1)
        # Guesses from 25 addresses: each stays under its own back-off.
        for n in range(25):
            with open_client(pq_app, f"203.0.113.{n + 10}") as guesser:
                if n < 20:
                    fail_logins(guesser, 1)
                else:
                    assert attempt(guesser, password="guess").status_code == 429
        clock.advance(minutes=1)
        with open_client(pq_app, "203.0.113.200") as new_browser:
            stranger = attempt(new_browser)
        real_user = attempt(users_browser)
        other_user = attempt(users_browser, "case_manager")

    assert stranger.status_code == 429  # past the account's cap: only known devices now
    assert real_user.status_code == 200
    assert other_user.status_code == 200


def test_a_known_device_is_held_back_by_its_own_failures(
    client: TestClient, clock: FakeClock
) -> None:
    assert attempt(client).status_code == 200
    clock.advance(seconds=1)
    fail_logins(client, 5)

    assert attempt(client).status_code == 429


def test_a_device_cookie_of_another_account_or_forged_does_not_count(
    pq_app: App, clock: FakeClock
) -> None:
    with open_client(pq_app, "198.51.100.3") as client:
        assert attempt(client, "case_manager").status_code == 200  # a device of case_manager
        clock.advance(seconds=1)
        fail_logins(client, 5)  # against viewer: this browser is no device of viewer's
        assert attempt(client).status_code == 429
        client.cookies.set("pqsync_device", "forged.0000", path="/")
        assert attempt(client).status_code == 429


def test_a_successful_login_clears_the_account_s_failures(pq_app: App) -> None:
    with (
        open_client(pq_app, "198.51.100.1") as first,
        open_client(pq_app, "198.51.100.2") as second,
    ):
        fail_logins(first, 4)
        login(second, "viewer")
        fail_logins(first, 1)

        assert attempt(first).is_success


@pytest.mark.parametrize(("trusted", "throttled_at"), [("", 5), ("203.0.113.7", 20)])
def test_x_forwarded_for_is_believed_only_from_a_trusted_proxy(
    build_app: Callable[..., App], trusted: str, throttled_at: int
) -> None:
    """The test client calls from 203.0.113.7; with it trusted each forwarded address is
    its own, and only the account's cap stops the rotation."""
    with open_client(build_app(PQSYNC_TRUSTED_PROXIES=trusted)) as client:
        statuses = [
            client.post(
                LOGIN,
                json={"email": USERS["viewer"], "password": "guess"},
                headers={"X-Forwarded-For": f"192.0.2.{n}"},
            ).status_code
            for n in range(1, 30)
        ]

    assert statuses[:throttled_at] == [401] * throttled_at
    assert set(statuses[throttled_at:]) == {429}


def test_login_attempts_keep_no_email(client: TestClient, pq_app: App) -> None:
    fail_logins(client, 2)

    with Session(pq_app.engine) as session:
        hashes = session.scalars(select(LoginAttempt.email_hash)).all()

    assert len(hashes) == 2
    assert all(len(h) == 64 and "@" not in h for h in hashes)
