"""What the casework tests share: appointments written straight into the seeded database
(times given in Denver, First Step House's zone), and reading a page as its text."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from pqsync.bootstrap import App
from pqsync.db.tables import Affiliation, Appointment, Provider, Service

DENVER = ZoneInfo("America/Denver")


def denver(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=DENVER).astimezone(UTC)  # type: ignore[misc]


def add_appointments(app: App, *rows: dict[str, Any]) -> list[uuid.UUID]:
    """Appointments with the first provider and service; each row names patient_id,
    start_time (aware) and optionally status, location_name, intakeq_last_modified."""
    with Session(app.engine) as session:
        provider = session.scalars(select(Provider).order_by(Provider.name)).first()
        service = session.scalars(select(Service).order_by(Service.name)).first()
        assert provider is not None and service is not None
        made = []
        values = []
        for row in rows:
            made.append(uuid.uuid4())
            values.append(
                {
                    "id": made[-1],
                    "pq_appointment_id": f"t-{made[-1].hex[:12]}",
                    "status": "confirmed",
                    "provider_id": provider.id,
                    "service_id": service.id,
                    "extra": {},
                    **row,
                }
            )
        session.execute(insert(Appointment), values)
        session.commit()
    return made


def names(app: App) -> tuple[str, str]:
    """The provider's and service's names add_appointments uses."""
    with Session(app.engine) as session:
        provider = session.scalars(select(Provider.name).order_by(Provider.name)).first()
        service = session.scalars(select(Service.name).order_by(Service.name)).first()
    assert provider is not None and service is not None
    return provider, service


def set_consent(
    app: App, patient_id: uuid.UUID, org_id: uuid.UUID, status: str, expires: Any
) -> None:
    with Session(app.engine) as session:
        session.execute(
            update(Affiliation)
            .where(Affiliation.patient_id == patient_id, Affiliation.organization_id == org_id)
            .values(roi_consent_status=status, roi_consent_expires_on=expires)
        )
        session.commit()


def text_of(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())
