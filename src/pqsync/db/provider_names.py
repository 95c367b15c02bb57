"""Who an appointment is with, as people read it: the provider the directory maps its IntakeQ
practitioner to, else the name IntakeQ gives the practitioner (kept from the appointment's
record). "Not yet known" is left for an appointment that has neither."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, func

from pqsync.db.tables import Appointment, Provider

PRACTITIONER_NAME = "PractitionerName"


def provider_name_column() -> ColumnElement[str | None]:
    """The name to show, in a query that outer-joins Provider on the appointment's provider."""
    intakeq_name = func.nullif(func.trim(Appointment.extra[PRACTITIONER_NAME].as_string()), "")
    return func.coalesce(Provider.name, intakeq_name)


def shown_provider_name(mapped: str | None, metadata: dict[str, Any] | None) -> str | None:
    """The same in Python: the mapped provider's name, else IntakeQ's practitioner name."""
    if mapped:
        return mapped
    name = (metadata or {}).get(PRACTITIONER_NAME)
    return name.strip() or None if isinstance(name, str) else None
