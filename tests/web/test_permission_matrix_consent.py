"""The permission matrix, continued: patients shared by two organisations, with ROI consent
active, revoked or expired for one or the other, and the runs each organisation started.

For every endpoint that shows a patient or a run, every role, and every such patient: the
status, and that no field of the body reveals what the caller may not see (appointment counts
or details without consent, the other organisation, its runs and its users).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session
from web_support import FakeClock, Seed, make_settings, open_client, wait_for_background

from intakeq_sim import SimulatorServer
from pqsync.bootstrap import App
from pqsync.db.engine import make_engine
from pqsync.db.tables import Affiliation, PartnerUser
from pqsync.domain import visibility

PATIENTS = "/api/partner-dashboard/patients"
ROLES = ("staff_admin", "partner_admin", "case_manager", "viewer", "other_org_admin")
HOME = {"partner_admin": "own", "case_manager": "own", "viewer": "own", "other_org_admin": "other"}
ORG_NAMES = {"own": "First Step House", "other": "Harbor House"}
# Consent of each shared patient with (First Step House, Harbor House).
SHARED = {
    "own-active-other-revoked": ("active", "revoked"),
    "own-revoked-other-active": ("revoked", "active"),
    "both-expired": ("expired", "expired"),
}
EXPIRED_ON = date(2025, 6, 30)  # before the tests' today (2025-11-15)


@dataclass(frozen=True)
class World:
    patients: dict[str, uuid.UUID]  # SHARED's names -> patient id
    consent: dict[tuple[str, str], bool]  # (patient name, "own"/"other") -> active
    runs: dict[tuple[str, str], uuid.UUID]  # (patient name or "org", "own"/"other") -> run id
    user_names: dict[str, list[str]]  # "own"/"other" -> names of that organisation's users


@pytest.fixture(scope="module")
def world_client(
    module_url: str, simulator: SimulatorServer, seeded: tuple[str, Seed]
) -> Iterator[tuple[TestClient, World]]:
    seed = seeded[1]
    engine = make_engine(module_url)
    chosen = dict(zip(SHARED, (seed.consenting, seed.expired, seed.missing), strict=True))
    with Session(engine) as session:
        for name, patient_id in chosen.items():
            statuses = dict(zip(("own", "other"), SHARED[name], strict=True))
            for which, status in statuses.items():
                org_id = seed.orgs[which]
                affiliation = session.scalars(
                    select(Affiliation).filter_by(patient_id=patient_id, organization_id=org_id)
                ).one_or_none()
                if affiliation is None:
                    affiliation = Affiliation(patient_id=patient_id, organization_id=org_id)
                    session.add(affiliation)
                affiliation.roi_consent_status = "active" if status == "expired" else status
                affiliation.roi_consent_expires_on = EXPIRED_ON if status == "expired" else None
        session.commit()
        users = {
            which: list(
                session.scalars(
                    select(PartnerUser.name).filter_by(organization_id=seed.orgs[which])
                )
            )
            for which in ("own", "other")
        }
    engine.dispose()
    app = App(
        settings=make_settings(module_url, simulator),
        engine=make_engine(module_url),
        clock=FakeClock(),
    )
    consent = {
        (name, which): SHARED[name][index] == "active"
        for name in SHARED
        for index, which in enumerate(("own", "other"))
    }
    try:
        with open_client(app) as client:
            runs: dict[tuple[str, str], uuid.UUID] = {}
            starter = {"own": "partner_admin", "other": "other_org_admin"}
            for which, who in starter.items():
                for name, patient_id in chosen.items():
                    answer = client.post(f"{PATIENTS}/{patient_id}/sync", headers=seed.bearer(who))
                    assert answer.status_code == 200, answer.text
                    runs[(name, which)] = _latest_run(client, seed, which)
                answer = client.post(
                    f"/api/partner-dashboard/organizations/{seed.orgs[which]}/sync-all-patients",
                    headers={**seed.bearer(who), "Prefer": "respond-async"},
                )
                assert answer.status_code == 202, answer.text
                runs[("org", which)] = uuid.UUID(answer.json()["runId"])
                wait_for_background(client)
            yield client, World(chosen, consent, runs, users)
    finally:
        app.close()


def _latest_run(client: TestClient, seed: Seed, which: str) -> uuid.UUID:
    from pqsync.db.tables import SyncLog

    with Session(client.app.state.pqsync.app.engine) as session:  # type: ignore[attr-defined]
        run_id = session.scalars(
            select(SyncLog.id)
            .where(SyncLog.organization_id == seed.orgs[which], SyncLog.sync_type == "patient")
            .order_by(SyncLog.started_at.desc(), SyncLog.id.desc())
        ).first()
    assert run_id is not None
    return run_id


def walk(value: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object inside `value`, itself included."""
    if isinstance(value, dict):
        yield value
        for inner in value.values():
            yield from walk(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from walk(inner)


def assert_reveals_nothing_more(caller: str, body: Any, text: str, world: World) -> None:
    """A partner's answer names no other organisation or its users, and shows no count or
    detail of a patient whose ROI consent with the partner's organisation is not active."""
    if caller == "staff_admin":
        return
    home = HOME[caller]
    away = "other" if home == "own" else "own"
    assert ORG_NAMES[away] not in text
    assert "another organization" not in text
    for name in world.user_names[away]:
        assert name not in text
    hidden = {str(world.patients[name]) for name in SHARED if not world.consent[(name, home)]}
    for item in walk(body):
        if item.get("patientId") in hidden or item.get("id") in hidden:
            assert item.get("summary") is None, item
            assert item.get("nextAppointment") is None, item
            assert item.get("appointments", []) == [], item
        if isinstance(item.get("patient"), dict) and item["patient"]["id"] in hidden:
            assert all(entry["summary"] is None for entry in item.get("history", [])), item


def cells() -> list[tuple[str, str, str]]:
    endpoints = ("roster", "appointments", "sync-history", "patient-sync", "patient-run", "org-run")
    # A viewer may not start a sync at all: the first matrix covers that 403.
    return [
        (e, c, p)
        for e in endpoints
        for c in ROLES
        for p in SHARED
        if (e, c) != ("patient-sync", "viewer")
    ]


@pytest.mark.parametrize(("endpoint", "caller", "patient"), cells())
def test_shared_patients_and_consent(
    world_client: tuple[TestClient, World], seed: Seed, endpoint: str, caller: str, patient: str
) -> None:
    client, world = world_client
    client.cookies.clear()
    headers = seed.bearer(caller)
    patient_id = world.patients[patient]
    home = HOME.get(caller, "own")
    away = "other" if home == "own" else "own"
    active = caller == "staff_admin" or world.consent[(patient, home)]
    expected = 200
    if endpoint == "roster":
        response = client.get(PATIENTS, headers=headers)
    elif endpoint == "appointments":
        response = client.get(f"{PATIENTS}/{patient_id}/appointments", headers=headers)
        expected = 200 if active else 403
    elif endpoint == "sync-history":
        response = client.get(f"{PATIENTS}/{patient_id}/sync-history", headers=headers)
    elif endpoint == "patient-sync":
        response = client.post(f"{PATIENTS}/{patient_id}/sync", headers=headers)
    else:
        key = (patient if endpoint == "patient-run" else "org", away)
        own_key = (patient if endpoint == "patient-run" else "org", home)
        for run_key, status in ((own_key, 200), (key, 200 if caller == "staff_admin" else 404)):
            answer = client.get(
                f"/api/partner-dashboard/sync-runs/{world.runs[run_key]}", headers=headers
            )
            assert answer.status_code == status, answer.text
            assert_reveals_nothing_more(caller, answer.json(), answer.text, world)
            if status == 200 and caller != "staff_admin":
                assert answer.json()["organizationName"] == ORG_NAMES[home]
        return

    assert response.status_code == expected, response.text
    assert_reveals_nothing_more(caller, response.json(), response.text, world)
    if endpoint == "patient-sync":
        body = response.json()
        assert body["success"] is True
        assert (body["summary"] is not None) is active
    if endpoint == "sync-history" and active:
        assert any(entry["summary"] is not None for entry in response.json()["history"])


def test_a_partner_s_patient_run_is_their_organisation_s_in_its_zone(
    world_client: tuple[TestClient, World], seed: Seed
) -> None:
    client, world = world_client
    run = world.runs[("own-revoked-other-active", "other")]

    seen = client.get(f"/api/partner-dashboard/sync-runs/{run}", headers=seed.bearer("staff_admin"))

    assert seen.json()["organizationName"] == "Harbor House"
    assert seen.json()["startedAt"].endswith("-05:00")  # New York, not Denver
    assert seen.json()["triggeredBy"] == "Hank Harbor"


TODAY = date(2025, 11, 15)  # the tests' FakeClock, in both organisations' zones
STATUS_ON_FILE = {"active": ("active", None), "revoked": ("revoked", None)}
STATUS_ON_FILE["expired"] = ("active", EXPIRED_ON)  # an active consent past its date


@dataclass(frozen=True)
class PolicyViewer:
    role: str
    organization_id: uuid.UUID | None


@pytest.mark.parametrize(("caller", "patient"), [(c, p) for c in ROLES for p in SHARED])
def test_the_visibility_policy_shows_details_only_under_active_consent(
    seed: Seed, caller: str, patient: str
) -> None:
    home = HOME.get(caller, "own")
    viewer = PolicyViewer(
        "partner_admin" if caller == "other_org_admin" else caller, seed.orgs[home]
    )
    on_file = SHARED[patient][0 if home == "own" else 1]
    status, expires = STATUS_ON_FILE[on_file]

    active = visibility.consent_active(status, expires, TODAY)
    shown = visibility.details_visible(viewer, active)

    assert visibility.consent_state(status, expires, TODAY) == on_file
    assert shown is (caller == "staff_admin" or on_file == "active")
