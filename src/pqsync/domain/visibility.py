"""Who may see and do what: the organisation, the role and the ROI consent (no I/O).

The one place these rules live. Services ask it and then query; routes never decide. A
partner reaches only their own organisation, its patients and its runs (anything else is
"hidden": answered exactly as if it did not exist); sees appointment details and counts only
while the patient's ROI consent with their organisation is active; and may start a sync only
in a role that syncs. The clinic's staff see everything.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Literal, Protocol

from pqsync.domain.roles import STAFF_ROLES, SYNC_ROLES

STAFF_ROLE = "staff_admin"
ConsentState = Literal["active", "missing", "expired", "revoked"]
Access = Literal["allowed", "forbidden", "hidden"]
Action = Literal["read", "sync"]
TRIGGER_LABELS = {
    "schedule": "nightly schedule",
    "webhook": "PracticeQ (webhook)",
    "cli": "command line",
}


class Viewer(Protocol):
    """Anyone the rules are asked about (an authenticated Principal fits)."""

    @property
    def role(self) -> str: ...

    @property
    def organization_id(self) -> uuid.UUID | None: ...


@dataclass(frozen=True)
class Starter:
    """The user who started a run, as far as the rules need to know them."""

    name: str
    role: str
    organization_id: uuid.UUID | None


def is_staff(viewer: Viewer) -> bool:
    """The clinic's staff (staff_admin, and the read-only staff_viewer) see everything."""
    return viewer.role in STAFF_ROLES


def may_administer(viewer: Viewer) -> bool:
    """Changing the clinic's settings (practitioner mappings, users) is staff_admin's only."""
    return viewer.role == STAFF_ROLE


def may_sync(viewer: Viewer) -> bool:
    """Staff, partner admins and case managers start syncs; viewers only read."""
    return viewer.role in SYNC_ROLES


def may_see_organization(viewer: Viewer, organization_id: uuid.UUID | None) -> bool:
    return is_staff(viewer) or (
        organization_id is not None and organization_id == viewer.organization_id
    )


def may_see_patient(viewer: Viewer, affiliated_organization_ids: Iterable[uuid.UUID]) -> bool:
    """Staff see every patient; a partner those affiliated with their own organisation."""
    return is_staff(viewer) or viewer.organization_id in set(affiliated_organization_ids)


def decide(viewer: Viewer, action: Action, owners: Iterable[uuid.UUID]) -> Access:
    """The answer to acting on something owned by these organisations: a role that may not
    sync is refused before anything is looked up; what is not the viewer's is hidden."""
    if action == "sync" and not may_sync(viewer):
        return "forbidden"
    return "allowed" if may_see_patient(viewer, owners) else "hidden"


def consent_state(status: str | None, expires_on: date | None, today: date) -> ConsentState:
    """What the ROI consent is on `today` (the organisation's today): active, missing,
    expired (an active consent past its date counts as expired) or revoked."""
    if status == "active":
        return "active" if expires_on is None or expires_on >= today else "expired"
    if status in ("expired", "revoked"):
        return status  # type: ignore[return-value]
    return "missing"


def consent_active(status: str | None, expires_on: date | None, today: date) -> bool:
    """Active status and not past its expiry date (the organisation's today)."""
    return consent_state(status, expires_on, today) == "active"


def details_visible(viewer: Viewer, consent_is_active: bool) -> bool:
    """Appointment details and counts: staff always, a partner only with active consent."""
    return is_staff(viewer) or consent_is_active


def may_see_run(viewer: Viewer, sync_type: str, organization_id: uuid.UUID | None) -> bool:
    """Staff see every run; a partner only the patient and organisation runs started for
    their own organisation (a run of a shared patient belongs to the organisation it was
    started for; nightly and webhook runs span organisations and are staff's)."""
    if is_staff(viewer):
        return True
    return sync_type in ("organization", "patient") and may_see_organization(
        viewer, organization_id
    )


def patient_run_in_history(
    viewer: Viewer,
    run_organization_id: uuid.UUID | None,
    triggered_by: str,
    starter: Starter | None,
) -> bool:
    """Whether a patient's single-patient run appears in the viewer's history of them: a
    partner sees their own organisation's, and those nobody of another organisation started
    (webhook, schedule, command line, the clinic's staff)."""
    if is_staff(viewer) or run_organization_id == viewer.organization_id:
        return True
    return triggered_by != "user" or (starter is not None and starter.role in STAFF_ROLES)


def trigger_label(viewer: Viewer, triggered_by: str, starter: Starter | None) -> str:
    """Who started a run, as the viewer may know it (never another organisation's user)."""
    if triggered_by != "user":
        return TRIGGER_LABELS.get(triggered_by, triggered_by)
    if starter is None:
        return "a removed user"
    if (
        is_staff(viewer)
        or starter.role in STAFF_ROLES
        or starter.organization_id == viewer.organization_id
    ):
        return starter.name
    return "a user of another organization"
