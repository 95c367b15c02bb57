"""The organisations a page offers to choose from, and the one a partner belongs to."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from pqsync.db.tables import Organization


def all_organizations(session: Session) -> list[Organization]:
    """Every organisation, by name (staff choose among them)."""
    return list(session.scalars(select(Organization).order_by(Organization.name)))


def organization_by_id(session: Session, organization_id: uuid.UUID | None) -> Organization | None:
    """The organisation with this id, if there is one."""
    return None if organization_id is None else session.get(Organization, organization_id)
