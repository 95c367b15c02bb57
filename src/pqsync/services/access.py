"""The access record: who read which patient's data, when, and through which view.

Every read of patient data (roster rows shown, the patient page, API answers, exports,
calendar feeds) calls `record_access` before the data leaves; staff ask the record per
patient or per user. Rows name the patient and user by id only (no names, no emails of
patients), carry no foreign keys, and are kept for at least `RETENTION_FLOOR`: no setting
prunes them sooner.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from pqsync.db.engine import begin_write
from pqsync.db.tables import PartnerUser, Patient, PatientAccess
from pqsync.services.auth import Principal

# Six years (HIPAA's documentation retention), counted generously over leap years.
RETENTION_FLOOR = timedelta(days=6 * 366)
DETAIL_LIMIT = 300


@dataclass(frozen=True)
class Accessor:
    """Someone reading patient data outside a login (a CLI command run by an operator)."""

    email: str
    role: str = "operator"
    via: str = "cli"
    user_id: uuid.UUID | None = None
    organization_id: uuid.UUID | None = None


@dataclass(frozen=True)
class AccessEntry:
    patient_id: uuid.UUID
    user_id: uuid.UUID | None
    user_email: str
    user_role: str
    organization_id: uuid.UUID | None
    via: str
    view: str
    detail: str | None
    request_id: str | None
    accessed_at: datetime


def _who(user: Principal | PartnerUser | Accessor) -> Accessor:
    if isinstance(user, Principal):
        return Accessor(user.email, user.role, user.via, user.user_id, user.organization_id)
    if isinstance(user, PartnerUser):
        return Accessor(user.email, user.role, "cli", user.id, user.organization_id)
    return user


def record_access(
    session: Session,
    *,
    user: Principal | PartnerUser | Accessor,
    view: str,
    patient_ids: Iterable[uuid.UUID],
    detail: str | None = None,
    now: datetime | None = None,
) -> None:
    """Record that `user` was shown the data of `patient_ids` through `view`, one row per
    patient, in its own committed transaction (call it before the data is sent: a read
    that cannot be recorded fails instead). Commits what the session held before."""
    ids = list(dict.fromkeys(patient_ids))
    if not ids:
        return
    who = _who(user)
    at = now or datetime.now(UTC)
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    session.commit()  # end the caller's read before taking the write lock
    begin_write(session)
    session.execute(
        insert(PatientAccess),
        [
            {
                "patient_id": patient_id,
                "user_id": who.user_id,
                "user_email": who.email,
                "user_role": who.role,
                "organization_id": who.organization_id,
                "via": who.via,
                "view": view,
                "detail": detail[:DETAIL_LIMIT] if detail else None,
                "request_id": str(request_id)[:64] if request_id else None,
                "accessed_at": at,
            }
            for patient_id in ids
        ],
    )
    session.commit()


def _entries(session: Session, *conditions: object, limit: int) -> list[AccessEntry]:
    rows = session.scalars(
        select(PatientAccess)
        .where(*conditions)  # type: ignore[arg-type]
        .order_by(PatientAccess.accessed_at.desc(), PatientAccess.id.desc())
        .limit(limit)
    )
    return [
        AccessEntry(
            patient_id=row.patient_id,
            user_id=row.user_id,
            user_email=row.user_email,
            user_role=row.user_role,
            organization_id=row.organization_id,
            via=row.via,
            view=row.view,
            detail=row.detail,
            request_id=row.request_id,
            accessed_at=row.accessed_at,
        )
        for row in rows
    ]


def access_for_patient(
    session: Session, patient_id: uuid.UUID, since: datetime | None = None, *, limit: int = 1000
) -> list[AccessEntry]:
    """Who read this patient's data (newest first), since `since` if given."""
    conditions: list[object] = [PatientAccess.patient_id == patient_id]
    if since is not None:
        conditions.append(PatientAccess.accessed_at >= since)
    return _entries(session, *conditions, limit=limit)


def access_by_user(
    session: Session, user_id: uuid.UUID, since: datetime | None = None, *, limit: int = 1000
) -> list[AccessEntry]:
    """Which patients' data this user read (newest first), since `since` if given."""
    conditions: list[object] = [PatientAccess.user_id == user_id]
    if since is not None:
        conditions.append(PatientAccess.accessed_at >= since)
    return _entries(session, *conditions, limit=limit)


class AccessQueryError(ValueError):
    """The question to the access record names no known patient or user."""


@dataclass(frozen=True)
class AccessReport:
    subject: str  # "patient <id>" or "user <email>"
    since: datetime
    entries: list[AccessEntry]
    patient_names: dict[uuid.UUID, str]


def access_report(
    session: Session,
    *,
    since: datetime,
    patient_id: str | None = None,
    user_email: str | None = None,
    limit: int = 1000,
) -> AccessReport:
    """Staff's question to the record: who read this patient, or what this user read,
    since `since` (newest first). A removed patient or user is still found by id/email."""
    if patient_id:
        try:
            pid = uuid.UUID(patient_id.strip())
        except ValueError:
            raise AccessQueryError("the patient id is not a valid id") from None
        entries = access_for_patient(session, pid, since, limit=limit)
        subject = f"patient {pid}"
    elif user_email:
        email = user_email.strip().lower()
        user_id = session.scalar(select(PartnerUser.id).where(PartnerUser.email == email))
        if user_id is not None:
            entries = access_by_user(session, user_id, since, limit=limit)
        else:  # a user removed since: found by the email written with each read
            entries = _entries(
                session,
                PatientAccess.user_email == email,
                PatientAccess.accessed_at >= since,
                limit=limit,
            )
        subject = f"user {email}"
    else:
        raise AccessQueryError("give a patient id or a user's email")
    ids = {entry.patient_id for entry in entries}
    names = (
        {
            row.id: f"{row.first_name} {row.last_name}".strip()
            for row in session.execute(
                select(Patient.id, Patient.first_name, Patient.last_name).where(Patient.id.in_(ids))
            )
        }
        if ids
        else {}
    )
    return AccessReport(subject=subject, since=since, entries=entries, patient_names=names)
