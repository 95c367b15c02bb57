"""Schemathesis against the app's own OpenAPI: no 5xx, every answer matches its schema.

The schema is read from an app built at collection time (describing the API touches no
database); the cases go to the module's real app, seeded and talking to the simulator. Each
case is sent as generated, and again aimed at real ids and with the endpoint's real
credential, so the fuzzed bodies, queries and headers also reach the code behind the 404s.
"""

from __future__ import annotations

import uuid
from typing import Any

import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import CheckFunction, not_a_server_error
from schemathesis.specs.openapi.checks import positive_data_acceptance
from sqlalchemy import create_engine
from web_support import CRON_SECRET, WEBHOOK_TOKEN, Seed

from pqsync.bootstrap import App
from pqsync.settings import load_settings
from pqsync.web.app import create_app


def _described_api() -> FastAPI:
    app = App(settings=load_settings(PQSYNC_ENV="test"), engine=create_engine("sqlite://"))
    api: FastAPI = create_app(app)
    return api


schema = schemathesis.openapi.from_asgi("/openapi.json", _described_api())
# A dateRange can be schema-valid and still wrong (end before start, more than 400 days):
# JSON Schema cannot relate two fields, so such 422s are right, not a failure.
NOT_CHECKED: list[CheckFunction] = [positive_data_acceptance]


def credentials(case: schemathesis.Case[Any], seed: Seed) -> dict[str, str]:
    if case.path.startswith("/api/cron/"):
        return {"Authorization": f"Bearer {CRON_SECRET}"}
    return seed.bearer("staff_admin")


def aim_at_real_targets(
    case: schemathesis.Case[Any], seed: Seed, runs: dict[str, uuid.UUID]
) -> bool:
    """Point the case at seeded ids and the real webhook token; False if nothing to aim."""
    real = {
        "patientId": seed.consenting,
        "orgId": seed.orgs["own"],
        "runId": runs["own"],
        "appointmentId": "no-such-appointment",
        "pushId": uuid.UUID(int=0),
    }
    aimed = False
    for name in case.path_parameters or {}:
        case.path_parameters[name] = str(real[name])
        aimed = True
    if case.path.startswith("/api/webhooks/"):
        case.query = {**(case.query or {}), "token": WEBHOOK_TOKEN}
        aimed = True
    return aimed


@schema.parametrize()
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_answer_matches_the_openapi_description(
    case: schemathesis.Case[Any],
    module_client: TestClient,
    module_runs: dict[str, uuid.UUID],
    seed: Seed,
) -> None:
    app = module_client.app
    # /healthz is 503 here by design (no worker runs): its answer is still checked.
    skipped = [*NOT_CHECKED, not_a_server_error] if case.path == "/healthz" else NOT_CHECKED
    case.call_and_validate(app=app, headers=credentials(case, seed), excluded_checks=skipped)
    if aim_at_real_targets(case, seed, module_runs):
        case.call_and_validate(app=app, headers=credentials(case, seed), excluded_checks=skipped)


def test_every_error_is_described_in_the_error_shape() -> None:
    described = _described_api().openapi()

    errors = {
        f"{method.upper()} {path} {status}": answer["content"]["application/json"]["schema"]
        for path, item in described["paths"].items()
        for method, operation in item.items()
        for status, answer in operation["responses"].items()
        if status.startswith(("4", "5")) and f"{method} {path}" != "get /healthz"
    }

    assert errors
    # /healthz's 503 is its own up-or-down answer (HealthOut), for monitors.
    assert {str(schema) for schema in errors.values()} == {
        str({"$ref": "#/components/schemas/ErrorResponse"})
    }
