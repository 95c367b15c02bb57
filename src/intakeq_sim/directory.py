"""The directory file (what `pqsync directory import` reads) that matches a simulator data set."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from intakeq_sim.data import (
    DEMO_PASSWORD,
    FSH_DOMAIN,
    FSH_NAME,
    FSH_SLUG,
    Dataset,
    make_id,
)


def demo_directory(dataset: Dataset) -> dict[str, Any]:
    """The directory file that matches `dataset`, ready for `pqsync directory import`.

    Leaves out the unmapped practitioner and the impostor client; gives `intakeq_client_id`
    only for `special.known_client_ids` so the sync has to learn the rest.
    """
    special = dataset.special
    patients: list[dict[str, Any]] = []
    affiliations: list[dict[str, Any]] = []
    fsh = dataset.fsh_patients
    # Consent: mostly active, one expired, one with none on file.
    expired, missing = fsh[-1].client_id, fsh[-2].client_id
    for client in fsh:
        email = client.directory_email or client.email
        patient: dict[str, Any] = {
            "id": make_id("patient", client.client_id),  # the same for every seed
            "first_name": client.first_name,
            "last_name": client.last_name,
            "email": email,
            "date_of_birth": client.date_of_birth.isoformat(),
        }
        if client.client_id in special.known_client_ids:
            patient["intakeq_client_id"] = client.client_id
        patients.append(patient)
        affiliation: dict[str, Any] = {"patient": email, "organization": FSH_SLUG}
        if client.client_id == expired:
            affiliation["roi_consent"] = {
                "status": "expired",
                "expires_on": (dataset.today - timedelta(days=30)).isoformat(),
            }
        elif client.client_id != missing:
            affiliation["roi_consent"] = {
                "status": "active",
                "expires_on": (dataset.today + timedelta(days=365)).isoformat(),
            }
        affiliations.append(affiliation)
    return {
        "organizations": [{"slug": FSH_SLUG, "name": FSH_NAME, "timezone": dataset.timezone}],
        "providers": [
            {"email": p.email, "name": p.complete_name, "intakeq_practitioner_id": p.id}
            for p in dataset.mapped_practitioners
        ],
        "services": [{"name": s.name, "intakeq_service_id": s.id} for s in dataset.services],
        "patients": patients,
        "affiliations": affiliations,
        "partner_users": [
            _user(f"beth@{FSH_DOMAIN}", "Beth Rodriguez", "partner_admin"),
            _user(f"jordan@{FSH_DOMAIN}", "Jordan Ames", "case_manager"),
            _user(f"viewer@{FSH_DOMAIN}", "Vic Ewer", "viewer"),
            _user("ops@clinic.example", "Clinic Operations", "staff_admin", organization=None),
        ],
    }


def _user(email: str, name: str, role: str, organization: str | None = FSH_SLUG) -> dict[str, Any]:
    user = {"email": email, "name": name, "role": role, "password": DEMO_PASSWORD}
    if organization is not None:
        user["organization"] = organization
    return user
