"""What an open page polls to learn that its data changed: a short mark of the newest
change (activity entry or sync) of a patient or an organisation's patients. Two cheap
aggregate queries; the mark is a digest, so it tells nothing but "changed"."""

from __future__ import annotations

import hashlib
import uuid

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from pqsync.db.tables import Affiliation, PatientActivity


def change_mark(
    session: Session,
    *,
    patient_id: uuid.UUID | None = None,
    organization_id: uuid.UUID | None = None,
) -> str:
    """A mark that differs whenever an appointment of the patient (else of the
    organisation's patients, else of anyone) changed or was synced."""
    patients: ColumnElement[bool] | None = None
    synced: ColumnElement[bool] | None = None
    if patient_id is not None:
        patients = PatientActivity.patient_id == patient_id
        synced = Affiliation.patient_id == patient_id
    elif organization_id is not None:
        members = select(Affiliation.patient_id).where(
            Affiliation.organization_id == organization_id
        )
        patients = PatientActivity.patient_id.in_(members)
        synced = Affiliation.organization_id == organization_id
    activity = select(func.max(PatientActivity.created_at), func.count())
    last_sync = select(func.max(Affiliation.last_practiceq_sync_at))
    if patients is not None and synced is not None:
        activity = activity.where(patients)
        last_sync = last_sync.where(synced)
    newest, entries = session.execute(activity).one()
    raw = f"{newest}|{entries}|{session.scalar(last_sync)}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]
