"""Every endpoint x every role x own organisation / other organisation / no authentication.

"own" is the caller's organisation (First Step House; Harbor House for its admin; First Step
House for the clinic's staff_admin), "other" the other one. A partner never learns whether
another organisation's patient, organisation or run exists: 404, not 403.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import httpx2
import pytest
from fastapi.testclient import TestClient
from web_support import CRON_SECRET, PASSWORD, USERS, Seed

from pqsync.domain import visibility

CALLERS = ("staff_admin", "partner_admin", "case_manager", "viewer", "other_org_admin", "anonymous")

ENDPOINTS = {
    "login": ("POST", "/api/auth/login"),
    "me": ("GET", "/api/auth/me"),
    "logout": ("POST", "/api/auth/logout"),
    "logout-everywhere": ("POST", "/api/auth/logout-everywhere"),
    "roster": ("GET", "/api/partner-dashboard/patients"),
    "appointments": ("GET", "/api/partner-dashboard/patients/{patient}/appointments"),
    "sync-history": ("GET", "/api/partner-dashboard/patients/{patient}/sync-history"),
    "sync-run": ("GET", "/api/partner-dashboard/sync-runs/{run}"),
    "patient-sync": ("POST", "/api/partner-dashboard/patients/{patient}/sync"),
    "org-sync": ("POST", "/api/partner-dashboard/organizations/{org}/sync-all-patients"),
    "sync-plan": ("GET", "/api/partner-dashboard/organizations/{org}/sync-plan"),
    "cron": ("POST", "/api/cron/sync-practiceq-appointments"),
    "webhook": ("POST", "/api/webhooks/practiceq/appointments"),
    "healthz": ("GET", "/healthz"),
    "metrics": ("GET", "/metrics"),
    "docs": ("GET", "/docs"),
    "openapi": ("GET", "/openapi.json"),
    "admin-runs": ("GET", "/api/admin/sync-runs"),
    "admin-alerts": ("GET", "/api/admin/alerts"),
}

# Expected status per caller; "own/other" where the endpoint is aimed at an organisation's
# patient, organisation or run.
MATRIX: dict[str, tuple[str, ...]] = {
    # endpoint       staff_admin partner_admin case_manager viewer  other_org  anonymous
    "login":        ("200",      "200",        "200",       "200",    "200",     "401"),
    "me":           ("200",      "200",        "200",       "200",    "200",     "401"),
    "logout":       ("204",      "204",        "204",       "204",    "204",     "401"),
    "logout-everywhere": ("204", "204",        "204",       "204",    "204",     "401"),
    "roster":       ("200",      "200",        "200",       "200",    "200",     "401"),
    "appointments": ("200/200",  "200/404",    "200/404",   "200/404", "200/404", "401/401"),
    "sync-history": ("200/200",  "200/404",    "200/404",   "200/404", "200/404", "401/401"),
    "sync-run":     ("200/200",  "200/404",    "200/404",   "200/404", "200/404", "401/401"),
    "patient-sync": ("200/200",  "200/404",    "200/404",   "403/403", "200/404", "401/401"),
    "org-sync":     ("200/200",  "200/404",    "200/404",   "403/403", "200/404", "401/401"),
    "sync-plan":    ("200/200",  "200/404",    "200/404",   "403/403", "200/404", "401/401"),
    "cron":         ("401",      "401",        "401",       "401",    "401",     "401"),
    "webhook":      ("404",      "404",        "404",       "404",    "404",     "404"),
    "healthz":      ("200",      "200",        "200",       "200",    "200",     "200"),
    "metrics":      ("401",      "401",        "401",       "401",    "401",     "401"),
    "docs":         ("200",      "200",        "200",       "200",    "200",     "200"),
    "openapi":      ("200",      "200",        "200",       "200",    "200",     "200"),
    "admin-runs":   ("200",      "403",        "403",       "403",    "403",     "401"),
    "admin-alerts": ("200",      "403",        "403",       "403",    "403",     "401"),
}  # fmt: skip


def _cells() -> list[tuple[str, str, str, int]]:
    cells = []
    for endpoint, row in MATRIX.items():
        for caller, expected in zip(CALLERS, row, strict=True):
            targets = dict(zip(("own", "other"), expected.split("/"), strict=False))
            for target, status in targets.items():
                cells.append((endpoint, caller, target if "/" in expected else "-", int(status)))
    return cells


def _call(
    client: TestClient,
    seed: Seed,
    module_runs: dict[str, uuid.UUID],
    endpoint: str,
    caller: str,
    target: str,
) -> httpx2.Response:
    client.cookies.clear()  # only the bearer token (or nothing) speaks for the caller
    method, path = ENDPOINTS[endpoint]
    home = "other" if caller == "other_org_admin" else "own"
    org = home if target in ("own", "-") else ("own" if home == "other" else "other")
    patient = seed.consenting if org == "own" else seed.other_patient
    url = path.format(patient=patient, org=seed.orgs[org], run=module_runs[org])
    headers = {} if caller == "anonymous" else seed.bearer(caller)
    if endpoint == "login":
        email = USERS.get(caller, USERS["viewer"])
        password = PASSWORD if caller != "anonymous" else "not the password"
        response = client.post(url, json={"email": email, "password": password})
        client.cookies.clear()
        return response
    if endpoint == "webhook":
        return client.post(url, headers=headers, json={"EventType": "AppointmentCreated"})
    return client.request(method, url, headers=headers)


@pytest.mark.parametrize(
    ("endpoint", "caller", "target", "expected"),
    _cells(),
    ids=[f"{e}|{c}|{t}" for e, c, t, _ in _cells()],
)
def test_permission_matrix(
    module_client: TestClient,
    seed: Seed,
    module_runs: dict[str, uuid.UUID],
    endpoint: str,
    caller: str,
    target: str,
    expected: int,
) -> None:
    response = _call(module_client, seed, module_runs, endpoint, caller, target)

    assert response.status_code == expected, response.text
    if expected >= 400:
        assert set(response.json()) == {"error"}
        assert set(response.json()["error"]) >= {"code", "message"}


def test_the_matrix_covers_every_endpoint_of_the_app(module_client: TestClient) -> None:
    schema = module_client.get("/openapi.json").json()
    documented = {
        (method.upper(), path) for path, item in schema["paths"].items() for method in item
    }
    placeholders = {
        "{patientId}": "{patient}",
        "{orgId}": "{org}",
        "{runId}": "{run}",
    }

    def normalized(path: str) -> str:
        for name, ours in placeholders.items():
            path = path.replace(name, ours)
        return path

    covered = {(method, path) for method, path in ENDPOINTS.values()}
    assert {(m, normalized(p)) for m, p in documented} <= covered


def test_the_cron_secret_opens_the_cron_endpoint(module_client: TestClient) -> None:
    response = module_client.post(
        "/api/cron/sync-practiceq-appointments",
        headers={"Authorization": f"Bearer {CRON_SECRET}"},
    )

    assert response.status_code == 200, response.text
    assert response.json()["success"] is True


# The same matrix, asked of the visibility policy itself (no HTTP, no database): the
# endpoints aimed at an organisation's patient, organisation or run, and what each asks.
POLICY_ACTIONS: dict[str, visibility.Action] = {
    "appointments": "read",
    "sync-history": "read",
    "sync-run": "read",
    "patient-sync": "sync",
    "org-sync": "sync",
    "sync-plan": "sync",
}
ANSWERS = {"allowed": 200, "forbidden": 403, "hidden": 404}
ROLE_OF = {"other_org_admin": "partner_admin"}


@dataclass(frozen=True)
class PolicyViewer:
    role: str
    organization_id: uuid.UUID | None


def _policy_cells() -> list[tuple[str, str, str, int]]:
    return [
        cell
        for cell in _cells()
        if cell[0] in POLICY_ACTIONS and cell[1] != "anonymous" and cell[2] != "-"
    ]


@pytest.mark.parametrize(
    ("endpoint", "caller", "target", "expected"),
    _policy_cells(),
    ids=[f"{e}|{c}|{t}" for e, c, t, _ in _policy_cells()],
)
def test_the_visibility_policy_decides_as_the_matrix_says(
    seed: Seed, endpoint: str, caller: str, target: str, expected: int
) -> None:
    home = "other" if caller == "other_org_admin" else "own"
    owner = home if target == "own" else ("own" if home == "other" else "other")
    viewer = PolicyViewer(ROLE_OF.get(caller, caller), seed.orgs[home])

    decision = visibility.decide(viewer, POLICY_ACTIONS[endpoint], [seed.orgs[owner]])

    assert ANSWERS[decision] == expected
    if endpoint == "sync-run":  # the run is the owner's Sync all
        seen = visibility.may_see_run(viewer, "organization", seed.orgs[owner])
        assert seen is (expected == 200)
