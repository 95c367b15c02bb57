"""One patient's whole record: export it (right of access) and erase their identifiers
while keeping the audit trail (`pqsync patients export|erase`)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from pqsync.db.engine import begin_write
from pqsync.db.tables import (
    Affiliation,
    Appointment,
    Organization,
    Patient,
    PatientAccess,
    PatientActivity,
)
from pqsync.services.access import Accessor, record_access

ERASED_NAME = "(erased)"


class PatientRecordError(ValueError):
    """No such patient, or a malformed id; one line."""


def _patient(session: Session, patient_id: str) -> Patient:
    try:
        found = session.get(Patient, uuid.UUID(patient_id.strip()))
    except ValueError:
        raise PatientRecordError("the patient id is not a valid id") from None
    if found is None:
        raise PatientRecordError("no patient with that id")
    return found


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def export_patient(
    session: Session, patient_id: str, *, by: Accessor, now: datetime
) -> dict[str, Any]:
    """Everything stored about one patient, as JSON-ready data; the export itself goes
    into the access record."""
    patient = _patient(session, patient_id)
    affiliations = session.execute(
        select(Affiliation, Organization.slug)
        .join(Organization, Organization.id == Affiliation.organization_id)
        .where(Affiliation.patient_id == patient.id)
    ).all()
    appointments = session.scalars(
        select(Appointment)
        .where(Appointment.patient_id == patient.id)
        .order_by(Appointment.start_time)
    ).all()
    activity = session.scalars(
        select(PatientActivity)
        .where(PatientActivity.patient_id == patient.id)
        .order_by(PatientActivity.created_at)
    ).all()
    reads = session.scalars(
        select(PatientAccess)
        .where(PatientAccess.patient_id == patient.id)
        .order_by(PatientAccess.accessed_at)
    ).all()
    exported = {
        "patient": {
            c: _plain(getattr(patient, c))
            for c in (
                "id",
                "first_name",
                "last_name",
                "email",
                "date_of_birth",
                "intakeq_client_id",
                "created_at",
                "updated_at",
            )
        },
        "affiliations": [
            {
                "organization": slug,
                "roi_consent_status": a.roi_consent_status,
                "roi_consent_expires_on": _plain(a.roi_consent_expires_on),
                "since": _plain(a.created_at),
                "last_synced_at": _plain(a.last_practiceq_sync_at),
            }
            for a, slug in affiliations
        ],
        "appointments": [
            {
                "intakeq_appointment_id": a.pq_appointment_id,
                "status": a.status,
                "start_time": _plain(a.start_time),
                "end_time": _plain(a.end_time),
                "location_name": a.location_name,
                "deleted_at": _plain(a.deleted_at),
                "last_synced_at": _plain(a.last_synced_at),
            }
            for a in appointments
        ],
        "change_history": [
            {
                "at": _plain(e.created_at),
                "type": e.activity_type,
                "description": e.description,
                "changes": e.changes,
                "actor": e.actor,
            }
            for e in activity
        ],
        "access_record": [
            {
                "at": _plain(r.accessed_at),
                "user_email": r.user_email,
                "user_role": r.user_role,
                "view": r.view,
            }
            for r in reads
        ],
    }
    record_access(session, user=by, view="export", patient_ids=[patient.id], now=now)
    return exported


def erase_patient(session: Session, patient_id: str, *, by: str, now: datetime) -> uuid.UUID:
    """Remove the patient's identifiers (name, email, birth date, IntakeQ client id), their
    affiliations and stored appointments; keep the row under its id, the change history
    and the access record (the audit trail), with an entry saying who erased them."""
    begin_write(session)
    patient = _patient(session, patient_id)
    pid = patient.id
    session.execute(delete(Appointment).where(Appointment.patient_id == pid))
    session.execute(delete(Affiliation).where(Affiliation.patient_id == pid))
    patient.first_name = ERASED_NAME
    patient.last_name = ""
    patient.email = f"erased-{pid}@erased.invalid"
    patient.date_of_birth = None
    patient.intakeq_client_id = None
    session.add(
        PatientActivity(
            patient_id=pid,
            activity_type="patient_erased",
            description=f"Identifiers erased by {by}; the history is kept",
            changes={"by": by},
            actor="cli",
            created_at=now,
        )
    )
    session.commit()
    return pid
