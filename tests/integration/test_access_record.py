"""The access record: who read which patient, asked per patient and per user."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pqsync.db.tables import PartnerUser, Patient, PatientActivity
from pqsync.services.access import (
    Accessor,
    access_by_user,
    access_for_patient,
    record_access,
)

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


def _patient(session: Session, email: str) -> uuid.UUID:
    patient = Patient(first_name="A", last_name="B", email=email)
    session.add(patient)
    session.commit()
    return patient.id


def _user(session: Session, email: str) -> PartnerUser:
    user = PartnerUser(email=email, name="U", role="staff_admin", organization_id=None)
    session.add(user)
    session.commit()
    return user


def test_reads_are_found_per_patient_and_per_user_newest_first(engine: Engine) -> None:
    with Session(engine, expire_on_commit=False) as session:
        ann, bob = _patient(session, "ann@x.test"), _patient(session, "bob@x.test")
        staff = _user(session, "ops@clinic.test")
        record_access(session, user=staff, view="roster", patient_ids=[ann, bob], now=NOW)
        record_access(
            session, user=staff, view="patient_page", patient_ids=[ann], now=NOW + timedelta(1)
        )
        operator = Accessor(email="root@host")
        record_access(session, user=operator, view="export", patient_ids=[bob], now=NOW)

        for_ann = access_for_patient(session, ann)
        for_bob = access_for_patient(session, bob)
        by_staff = access_by_user(session, staff.id)
        recent = access_for_patient(session, ann, since=NOW + timedelta(hours=1))

    assert [(e.view, e.user_email) for e in for_ann] == [
        ("patient_page", "ops@clinic.test"),
        ("roster", "ops@clinic.test"),
    ]
    assert sorted((e.view, e.via) for e in for_bob) == [("export", "cli"), ("roster", "cli")]
    assert [(e.view, e.patient_id) for e in by_staff][:1] == [("patient_page", ann)]
    assert len(by_staff) == 3
    assert [e.view for e in recent] == ["patient_page"]


def test_the_record_outlives_the_patient_and_the_user(engine: Engine) -> None:
    with Session(engine, expire_on_commit=False) as session:
        ann = _patient(session, "ann@x.test")
        staff = _user(session, "ops@clinic.test")
        record_access(session, user=staff, view="roster", patient_ids=[ann], now=NOW)
        session.execute(delete(PartnerUser).where(PartnerUser.id == staff.id))
        session.execute(delete(Patient).where(Patient.id == ann))
        session.commit()

        assert session.scalar(select(Patient.id).where(Patient.id == ann)) is None
        kept = access_for_patient(session, ann)

    assert [(e.user_email, e.user_id) for e in kept] == [("ops@clinic.test", staff.id)]


def test_a_patient_with_a_change_history_cannot_be_deleted(engine: Engine) -> None:
    with Session(engine, expire_on_commit=False) as session:
        ann = _patient(session, "ann@x.test")
        session.add(
            PatientActivity(
                patient_id=ann, activity_type="consent_changed", description="d", actor="cli"
            )
        )
        session.commit()

        with pytest.raises(IntegrityError):
            session.execute(delete(Patient).where(Patient.id == ann))
            session.commit()
        session.rollback()

        assert session.scalar(select(func.count()).select_from(PatientActivity)) == 1
