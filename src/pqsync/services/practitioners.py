"""Unmatched IntakeQ practitioners, the lists staff choose from (practitioners seen in IntakeQ's
data, existing providers), creating a provider, and mapping a practitioner to a provider
(re-linking its appointments)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import EmailStr, TypeAdapter, ValidationError
from sqlalchemy import Engine, func, insert, select, update
from sqlalchemy.orm import Session

from pqsync.db.lookup import provider_by_ref
from pqsync.db.tables import Appointment, PatientActivity, Provider, ProviderIntakeQSettings
from pqsync.services.sync.results import Actor


class PractitionerError(ValueError):
    """Bad input to a practitioner mapping or a new provider; nothing was written.

    `field` names the form field the message belongs next to (None: the whole form)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


_EMAIL = TypeAdapter(EmailStr)


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


def _practitioner_name(session: Session, practitioner_id: str) -> str | None:
    sample = session.scalar(
        select(Appointment.extra)
        .where(Appointment.intakeq_practitioner_id == practitioner_id)
        .limit(1)
    )
    name = (sample or {}).get("PractitionerName")
    return name if isinstance(name, str) else None


@dataclass(frozen=True)
class PractitionerChoice:
    """An IntakeQ practitioner seen in the stored appointments or already mapped."""

    practitioner_id: str
    name: str | None  # as IntakeQ names them
    unlinked: int  # stored appointments showing no provider
    provider_name: str | None  # the provider it is mapped to, if any


@dataclass(frozen=True)
class ProviderChoice:
    id: uuid.UUID
    name: str
    email: str
    practitioner_id: str | None  # the IntakeQ practitioner it is mapped to, if any


def practitioner_choices(engine: Engine) -> list[PractitionerChoice]:
    """Every IntakeQ practitioner pqsync has seen (appointments, mappings): the unmapped
    first (most unlinked appointments first), then the mapped, each by name."""
    with Session(engine) as session:
        unlinked = dict(
            session.execute(
                select(Appointment.intakeq_practitioner_id, func.count())
                .where(
                    Appointment.provider_id.is_(None),
                    Appointment.intakeq_practitioner_id.is_not(None),
                    Appointment.deleted_at.is_(None),
                )
                .group_by(Appointment.intakeq_practitioner_id)
            ).all()
        )
        seen = {
            pid
            for pid in session.scalars(
                select(Appointment.intakeq_practitioner_id)
                .where(Appointment.intakeq_practitioner_id.is_not(None))
                .distinct()
            )
            if pid is not None
        }
        mapped = dict(
            session.execute(
                select(ProviderIntakeQSettings.intakeq_practitioner_id, Provider.name).join(
                    Provider, Provider.id == ProviderIntakeQSettings.provider_id
                )
            ).all()
        )
        choices = [
            PractitionerChoice(
                pid,
                _practitioner_name(session, pid),
                int(unlinked.get(pid, 0)),
                mapped.get(pid),
            )
            for pid in seen | set(mapped)
        ]
    return sorted(
        choices,
        key=lambda c: (
            c.provider_name is not None,
            -c.unlinked,
            (c.name or "").lower(),
            c.practitioner_id,
        ),
    )


def provider_choices(engine: Engine) -> list[ProviderChoice]:
    """Every provider, by name, with the IntakeQ practitioner each is mapped to."""
    with Session(engine) as session:
        rows = session.execute(
            select(Provider, ProviderIntakeQSettings.intakeq_practitioner_id)
            .outerjoin(ProviderIntakeQSettings, ProviderIntakeQSettings.provider_id == Provider.id)
            .order_by(func.lower(Provider.name), Provider.email)
        ).all()
        return [ProviderChoice(p.id, p.name, p.email, pid) for p, pid in rows]


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
        raise PractitionerError("choose an IntakeQ practitioner", "practitioner_id")
    now = now or datetime.now(UTC)
    with Session(engine) as session, session.begin():
        provider = provider_by_ref(session, provider_ref) if provider_ref.strip() else None
        if provider is None:
            if not provider_ref.strip():
                raise PractitionerError("choose a provider", "provider")
            raise PractitionerError(f"no such provider: {provider_ref}", "provider")
        return _map(session, practitioner_id, provider, actor, now)


@dataclass(frozen=True)
class NewProvider:
    name: str
    email: str
    relinked: int  # appointments re-linked by mapping it at once (0 without a practitioner)


def create_provider(
    engine: Engine,
    name: str,
    email: str,
    practitioner_id: str = "",
    *,
    actor: Actor = Actor(kind="cli"),  # noqa: B008 - a frozen dataclass is a safe default
    now: datetime | None = None,
) -> NewProvider:
    """A new provider, mapped at once to `practitioner_id` when one is given (one
    transaction: an error writes nothing)."""
    name, email, practitioner_id = name.strip(), email.strip().lower(), practitioner_id.strip()
    if not name:
        raise PractitionerError("enter the provider's name", "name")
    if len(name) > 200:
        raise PractitionerError("the name is longer than 200 characters", "name")
    if not email:
        raise PractitionerError("enter the provider's email", "email")
    try:
        email = _EMAIL.validate_python(email).lower()
    except ValidationError:
        raise PractitionerError("that is not an email address", "email") from None
    now = now or datetime.now(UTC)
    with Session(engine) as session, session.begin():
        if session.scalar(select(Provider.id).where(Provider.email == email)) is not None:
            raise PractitionerError("a provider with that email already exists", "email")
        provider = Provider(id=uuid.uuid4(), name=name, email=email, created_at=now)
        session.add(provider)
        session.flush()
        relinked = _map(session, practitioner_id, provider, actor, now) if practitioner_id else 0
        return NewProvider(name, email, relinked)


def _map(
    session: Session, practitioner_id: str, provider: Provider, actor: Actor, now: datetime
) -> int:
    """Map within the caller's transaction; how many appointments were re-linked."""
    taken = session.scalar(
        select(ProviderIntakeQSettings).filter_by(intakeq_practitioner_id=practitioner_id)
    )
    if taken is not None and taken.provider_id != provider.id:
        raise PractitionerError(
            "that IntakeQ practitioner is already mapped to another provider", "practitioner_id"
        )
    own = session.scalar(select(ProviderIntakeQSettings).filter_by(provider_id=provider.id))
    if own is not None and own.intakeq_practitioner_id != practitioner_id:
        raise PractitionerError(
            "that provider is already mapped to another IntakeQ practitioner", "provider"
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
