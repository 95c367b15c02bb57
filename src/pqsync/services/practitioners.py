"""Unmatched IntakeQ practitioners, and mapping one to a provider (re-linking its appointments)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, func, insert, select, update
from sqlalchemy.orm import Session

from pqsync.db.lookup import provider_by_ref
from pqsync.db.tables import Appointment, PatientActivity, ProviderIntakeQSettings
from pqsync.services.sync.results import Actor


class PractitionerError(ValueError):
    """Bad input to a practitioner mapping; nothing was written."""


@dataclass(frozen=True)
class UnmatchedPractitioner:
    practitioner_id: str
    name: str | None
    appointments: int


def unmatched_practitioners(engine: Engine) -> list[UnmatchedPractitioner]:
    """IntakeQ practitioners holding stored appointments but mapped to no provider."""
    with Session(engine) as session:
        counts = session.execute(
            select(Appointment.intakeq_practitioner_id, func.count())
            .where(
                Appointment.provider_id.is_(None),
                Appointment.intakeq_practitioner_id.is_not(None),
                Appointment.deleted_at.is_(None),
            )
            .group_by(Appointment.intakeq_practitioner_id)
            .order_by(func.count().desc())
        ).all()
        out = []
        for practitioner_id, count in counts:
            if practitioner_id is None:
                continue
            sample = session.scalar(
                select(Appointment.extra)
                .where(Appointment.intakeq_practitioner_id == practitioner_id)
                .limit(1)
            )
            name = (sample or {}).get("PractitionerName")
            out.append(
                UnmatchedPractitioner(
                    practitioner_id, name if isinstance(name, str) else None, count
                )
            )
        return out


def map_practitioner(
    engine: Engine,
    practitioner_id: str,
    provider_ref: str,
    *,
    actor: Actor = Actor(kind="cli"),  # noqa: B008 - a frozen dataclass is a safe default
    now: datetime | None = None,
) -> int:
    """Map an IntakeQ practitioner to a provider; re-link and audit its stored appointments.

    Returns how many appointments were re-linked.
    """
    practitioner_id = practitioner_id.strip()
    if not practitioner_id:
        raise PractitionerError("the IntakeQ practitioner id is empty")
    now = now or datetime.now(UTC)
    with Session(engine) as session, session.begin():
        provider = provider_by_ref(session, provider_ref)
        if provider is None:
            raise PractitionerError(f"no such provider: {provider_ref}")
        taken = session.scalar(
            select(ProviderIntakeQSettings).filter_by(intakeq_practitioner_id=practitioner_id)
        )
        if taken is not None and taken.provider_id != provider.id:
            raise PractitionerError(
                "that IntakeQ practitioner is already mapped to another provider"
            )
        own = session.scalar(select(ProviderIntakeQSettings).filter_by(provider_id=provider.id))
        if own is not None and own.intakeq_practitioner_id != practitioner_id:
            raise PractitionerError(
                "that provider is already mapped to another IntakeQ practitioner"
            )
        if own is None:
            session.add(
                ProviderIntakeQSettings(
                    provider_id=provider.id, intakeq_practitioner_id=practitioner_id
                )
            )
        rows = list(
            session.execute(
                select(Appointment.id, Appointment.patient_id, Appointment.pq_appointment_id).where(
                    Appointment.intakeq_practitioner_id == practitioner_id,
                    Appointment.provider_id.is_distinct_from(provider.id),
                )
            ).all()
        )
        if rows:
            session.execute(
                update(Appointment)
                .where(Appointment.id.in_([r[0] for r in rows]))
                .values(provider_id=provider.id, updated_at=now)
            )
            session.execute(
                insert(PatientActivity),
                [
                    {
                        "id": uuid.uuid4(),
                        "patient_id": patient_id,
                        "appointment_id": appointment_id,
                        "activity_type": "appointment_provider_linked",
                        "description": f"Appointment {pq_id} linked to provider {provider.name} "
                        "(IntakeQ practitioner mapped)",
                        "changes": {"provider_id": {"old": None, "new": str(provider.id)}},
                        "actor": actor.kind,
                        "actor_user_id": actor.user_id,
                        "created_at": now,
                    }
                    for appointment_id, patient_id, pq_id in rows
                ],
            )
        return len(rows)
