"""Password guessing against a real server on loopback: 200 wrong passwords with a rotating
X-Forwarded-For are throttled, while the account's real user and the other users behind the
same address still sign in."""

from __future__ import annotations

from collections import Counter

import httpx
import pytest
from live_server import live_server, server_env
from web_support import PASSWORD, USERS

from intakeq_sim import SimulatorServer

LOGIN = "/api/auth/login"


def sign_in(client: httpx.Client, who: str, device: str | None = None) -> httpx.Response:
    # The cookie is Secure, and this is plain HTTP on loopback: send it as a browser on
    # HTTPS would.
    headers = {"Cookie": f"pqsync_device={device}"} if device else {}
    return client.post(LOGIN, json={"email": USERS[who], "password": PASSWORD}, headers=headers)


@pytest.mark.e2e
def test_a_rotating_forwarded_for_is_throttled_and_locks_out_nobody(
    module_url: str, simulator: SimulatorServer
) -> None:
    with (
        live_server(server_env(module_url, simulator.base_url)) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        earlier = sign_in(client, "case_manager")
        assert earlier.status_code == 200
        device = earlier.cookies["pqsync_device"]

        statuses = Counter(
            client.post(
                LOGIN,
                json={"email": USERS["case_manager"], "password": f"guess-{n}"},
                headers={"X-Forwarded-For": f"198.51.{n // 250}.{n % 250 + 1}"},
            ).status_code
            for n in range(200)
        )
        stranger = sign_in(client, "case_manager")
        real_user = sign_in(client, "case_manager", device)
        neighbours = [sign_in(client, who) for who in ("viewer", "partner_admin")]

    assert statuses == {401: 5, 429: 195}
    assert stranger.status_code == 429  # the guesser's own address, without the device
    assert real_user.status_code == 200
    assert real_user.json()["user"]["email"] == USERS["case_manager"]
    assert [n.status_code for n in neighbours] == [200, 200]
