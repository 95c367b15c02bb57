"""Over the whole OpenAPI: every answer carries the security headers, every state-changing
route refuses a caller without its credential or a cookie caller without the CSRF token,
and every route refuses a body past the limit, chunked or not."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from web_support import PASSWORD, USERS, Seed, open_client

from pqsync.bootstrap import App
from pqsync.web.security import CONTENT_SECURITY_POLICY, MAX_BODY_BYTES

STATE_CHANGING = {"post", "put", "patch", "delete"}
# The one state-changing route that takes no credential: it is where the credential is made.
NO_CREDENTIAL = {"/api/auth/login"}
HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


def operations(client: TestClient) -> list[tuple[str, str]]:
    schema = client.get("/openapi.json").json()
    return [(method, path) for path, item in schema["paths"].items() for method in item]


def concrete(path: str, seed: Seed, run: uuid.UUID) -> str:
    return path.format(
        patientId=seed.consenting,
        orgId=seed.orgs["own"],
        runId=run,
        patient=seed.consenting,
        appointmentId="no-such-appointment",
        pushId=uuid.UUID(int=0),
    )


def assert_security_headers(headers: dict[str, str] | object) -> None:
    for name, value in HEADERS.items():
        assert headers[name] == value, name  # type: ignore[index]
    assert "unsafe-inline" not in headers["content-security-policy"]  # type: ignore[index]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]  # type: ignore[index]


def test_every_route_sends_the_security_headers(
    module_client: TestClient, seed: Seed, module_runs: dict[str, uuid.UUID]
) -> None:
    ops = operations(module_client)
    assert len(ops) >= 10
    for method, path in ops:
        url = concrete(path, seed, module_runs["own"])
        for headers in ({}, seed.bearer("partner_admin")):
            response = module_client.request(method, url, headers=headers)
            assert_security_headers(response.headers)
            # The test client speaks HTTPS: browsers are told to stay on it.
            assert response.headers["strict-transport-security"].startswith("max-age=")
    for url in ("/docs", "/docs/init.js", "/docs/assets/swagger-ui.css", "/no-such-page"):
        assert_security_headers(module_client.get(url).headers)


def test_docs_work_offline_from_the_installed_package(module_client: TestClient) -> None:
    page = module_client.get("/docs")

    assert page.status_code == 200
    assert (
        "http://" not in page.text and "https://" not in page.text and "<script>" not in page.text
    )
    for asset in ("/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"):
        assert asset in page.text
        response = module_client.get(asset)
        assert response.status_code == 200 and len(response.content) > 10_000
    assert "/openapi.json" in module_client.get("/docs/init.js").text


@pytest.fixture
def http_client(build_app: Callable[..., App]) -> Iterator[Callable[..., TestClient]]:
    """Clients over plain HTTP, calling from 10.0.0.5, with the given settings."""
    opened: list[TestClient] = []

    def make(**settings: str) -> TestClient:
        client = open_client(build_app(**settings), address="10.0.0.5")
        client.base_url = client.base_url.copy_with(scheme="http")
        opened.append(client.__enter__())
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


def test_hsts_only_over_https_and_forwarded_proto_only_from_a_trusted_proxy(
    http_client: Callable[..., TestClient],
) -> None:
    forwarded = {"X-Forwarded-Proto": "https"}
    untrusted = http_client()
    assert "strict-transport-security" not in untrusted.get("/healthz").headers
    assert "strict-transport-security" not in untrusted.get("/healthz", headers=forwarded).headers

    behind_proxy = http_client(PQSYNC_TRUSTED_PROXIES="10.0.0.0/24")
    assert "strict-transport-security" not in behind_proxy.get("/healthz").headers
    assert "strict-transport-security" in behind_proxy.get("/healthz", headers=forwarded).headers


def test_every_state_changing_route_refuses_a_missing_credential(
    module_client: TestClient, seed: Seed, module_runs: dict[str, uuid.UUID]
) -> None:
    module_client.cookies.clear()
    changing = [(m, p) for m, p in operations(module_client) if m in STATE_CHANGING]
    assert len(changing) >= 5
    for method, path in changing:
        if path in NO_CREDENTIAL:
            continue
        response = module_client.request(method, concrete(path, seed, module_runs["own"]), json={})
        # 404 for the webhook: without its token it looks like no endpoint at all.
        assert response.status_code in (401, 404), (path, response.text)


def test_every_state_changing_route_refuses_a_cookie_without_the_csrf_token(
    module_client: TestClient, seed: Seed, module_runs: dict[str, uuid.UUID]
) -> None:
    changing = [(m, p) for m, p in operations(module_client) if m in STATE_CHANGING]
    for method, path in changing:
        if path in NO_CREDENTIAL:
            continue
        module_client.cookies.clear()
        login = module_client.post(
            "/api/auth/login", json={"email": USERS["partner_admin"], "password": PASSWORD}
        )
        assert login.status_code == 200
        url = concrete(path, seed, module_runs["own"])
        for csrf in ({}, {"X-CSRF-Token": "wrong"}, {"X-CSRF-Token": ""}):
            response = module_client.request(method, url, headers=csrf, json={})
            assert response.status_code in (401, 403, 404), (path, response.text)
            if path.startswith("/api/partner-dashboard") or path == "/api/auth/logout":
                assert response.json()["error"]["code"] == "csrf_failed"
    module_client.cookies.clear()


def oversize(chunk: int = 256 * 1024) -> Iterator[bytes]:
    sent = 0
    while sent <= MAX_BODY_BYTES:
        yield b" " * chunk
        sent += chunk


def test_every_route_refuses_an_oversize_body_chunked_or_declared(
    module_client: TestClient, seed: Seed, module_runs: dict[str, uuid.UUID]
) -> None:
    for method, path in operations(module_client):
        url = concrete(path, seed, module_runs["own"])
        chunked = module_client.request(
            method, url, content=oversize(), headers=seed.bearer("staff_admin")
        )
        assert chunked.status_code == 413, (method, path)
        declared = module_client.request(
            method, url, content=b" " * (MAX_BODY_BYTES + 1), headers=seed.bearer("staff_admin")
        )
        assert declared.status_code == 413, (method, path)
        assert declared.json()["error"]["code"] == "payload_too_large"
