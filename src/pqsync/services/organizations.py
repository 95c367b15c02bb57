"""The organisations a page offers to choose from, and the one a partner belongs to."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pqsync.db.tables import Affiliation, Organization


def all_organizations(session: Session) -> list[Organization]:
    """Every organisation, by name (staff choose among them)."""
    return list(session.scalars(select(Organization).order_by(Organization.name)))


def organization_by_id(session: Session, organization_id: uuid.UUID | None) -> Organization | None:
    """The organisation with this id, if there is one."""
    return None if organization_id is None else session.get(Organization, organization_id)


def patient_count(session: Session, organization_id: uuid.UUID) -> int:
    """How many patients the organisation has (the roster's "Patients (12)")."""
    return (
        session.scalar(
            select(func.count())
            .select_from(Affiliation)
            .where(Affiliation.organization_id == organization_id)
        )
        or 0
    )
