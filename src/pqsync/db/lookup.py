"""Finding a row by the reference a user types: its UUID, or its natural key."""

from __future__ import annotations

import uuid
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import InstrumentedAttribute, Session

from pqsync.db.tables import Base, Organization, Patient, Provider

Row = TypeVar("Row", bound=Base)


def by_ref(
    session: Session,
    model: type[Row],
    ref: str,
    natural_key: InstrumentedAttribute[str],
    *,
    lower: bool = False,
) -> Row | None:
    """The row whose id is `ref` (a UUID), else whose `natural_key` equals it."""
    try:
        return session.get(model, uuid.UUID(ref))
    except ValueError:
        pass
    value = ref.strip().lower() if lower else ref.strip()
    if not value or "\x00" in value:  # PostgreSQL refuses to compare a NUL
        return None
    return session.scalar(select(model).where(natural_key == value))


def patient_by_ref(session: Session, ref: str) -> Patient | None:
    """A patient by id or email (emails are stored lower-cased)."""
    return by_ref(session, Patient, ref, Patient.email, lower=True)


def organization_by_ref(session: Session, ref: str) -> Organization | None:
    """An organisation by id or slug."""
    return by_ref(session, Organization, ref, Organization.slug)


def provider_by_ref(session: Session, ref: str) -> Provider | None:
    """A provider by id or email."""
    return by_ref(session, Provider, ref, Provider.email, lower=True)
