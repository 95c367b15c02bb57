"""A partner admin manages their own organisation: its users (invite, change a role,
deactivate) and its residents' ROI consents with their expiry dates.

Only partner roles are given and changed, only within the admin's organisation, and never
the admin's own account (an admin cannot lock themselves or the organisation out by
mistake). Deactivating ends the user's sessions and API tokens at once (issue 27's
`deactivate_user`); their calendar address stops answering with them. An invitation is a
one-time link, valid for INVITATION_DAYS, with which the invited person sets a password;
only its SHA-256 is stored.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from pydantic import EmailStr, TypeAdapter, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from pqsync.db.engine import begin_write
from pqsync.db.tables import Affiliation, Invitation, Organization, PartnerUser, Patient
from pqsync.domain import visibility
from pqsync.domain.roles import PARTNER_ROLES
from pqsync.services.auth import Principal, new_token, token_digest
from pqsync.services.calendar_feed import stop_feed
from pqsync.services.casework import org_today
from pqsync.services.passwords import hash_password, password_problem
from pqsync.services.users import UserInputError, deactivate_user

INVITATION_DAYS = 7
INVITE_PREFIX = "inv_"
_email: TypeAdapter[str] = TypeAdapter(EmailStr)


class NotYours(LookupError):
    """No such user in the admin's organisation (never told apart from no such user)."""


@dataclass(frozen=True)
class MemberLine:
    id: uuid.UUID
    name: str
    email: str
    role: str
    active: bool
    invited: bool  # no password set yet
    is_me: bool


@dataclass(frozen=True)
class ConsentLine:
    patient_id: uuid.UUID
    name: str
    state: str  # active | missing | expired | revoked
    expires_on: date | None
    days_left: int | None


def may_manage(viewer: Principal) -> bool:
    return viewer.role == "partner_admin" and viewer.organization_id is not None


def members(session: Session, viewer: Principal) -> list[MemberLine]:
    return [
        MemberLine(
            id=user.id,
            name=user.name,
            email=user.email,
            role=user.role,
            active=user.is_active,
            invited=user.password_hash is None,
            is_me=user.id == viewer.user_id,
        )
        for user in session.scalars(
            select(PartnerUser)
            .where(PartnerUser.organization_id == viewer.organization_id)
            .order_by(PartnerUser.is_active.desc(), PartnerUser.name, PartnerUser.email)
        )
    ]


def consents(session: Session, org: Organization, now: datetime) -> list[ConsentLine]:
    """Every resident's ROI consent, the soonest to expire first (none on file last)."""
    today = org_today(org, now)
    lines = []
    for patient_id, first, last, status, expires in session.execute(
        select(
            Affiliation.patient_id,
            Patient.first_name,
            Patient.last_name,
            Affiliation.roi_consent_status,
            Affiliation.roi_consent_expires_on,
        )
        .join(Patient, Patient.id == Affiliation.patient_id)
        .where(Affiliation.organization_id == org.id)
        .order_by(
            Affiliation.roi_consent_expires_on.is_(None),
            Affiliation.roi_consent_expires_on,
            Patient.last_name,
            Patient.first_name,
            Patient.id,
        )
    ):
        lines.append(
            ConsentLine(
                patient_id=patient_id,
                name=f"{first} {last}".strip(),
                state=visibility.consent_state(status, expires, today),
                expires_on=expires,
                days_left=(expires - today).days if expires else None,
            )
        )
    return lines


def _member(session: Session, viewer: Principal, user_id: str) -> PartnerUser:
    try:
        user = session.get(PartnerUser, uuid.UUID(user_id))
    except ValueError:
        user = None
    if user is None or user.organization_id != viewer.organization_id:
        raise NotYours("no such user")
    if user.id == viewer.user_id:
        raise UserInputError("You cannot change your own account here.")
    return user


def invite(
    session: Session, viewer: Principal, *, email: str, name: str, role: str, now: datetime
) -> str:
    """A new user of the admin's organisation without a password, and the one-time token of
    the link with which they set it."""
    try:
        address = _email.validate_python(email.strip()).lower()
    except ValidationError:
        raise UserInputError("That is not a valid email address.") from None
    if role not in PARTNER_ROLES:
        raise UserInputError("Choose a role.")
    if not name.strip():
        raise UserInputError("Give the person's name.")
    begin_write(session)
    if session.scalar(select(PartnerUser.id).filter_by(email=address)) is not None:
        session.rollback()
        raise UserInputError("Someone with that email already has an account.")
    user = PartnerUser(
        id=uuid.uuid4(),
        email=address,
        name=name.strip()[:200],
        role=role,
        organization_id=viewer.organization_id,
        password_hash=None,
        is_active=True,
        created_at=now,
    )
    session.add(user)
    session.flush()
    token = new_token(INVITE_PREFIX)
    session.add(
        Invitation(
            user_id=user.id,
            token_hash=token_digest(token),
            invited_by_user_id=viewer.user_id,
            created_at=now,
            expires_at=now + timedelta(days=INVITATION_DAYS),
        )
    )
    session.commit()
    return token


def change_role(session: Session, viewer: Principal, user_id: str, role: str) -> PartnerUser:
    if role not in PARTNER_ROLES:
        raise UserInputError("Choose a role.")
    begin_write(session)
    user = _member(session, viewer, user_id)
    user.role = role
    session.commit()
    return user


def deactivate(session: Session, viewer: Principal, user_id: str, now: datetime) -> PartnerUser:
    """Sessions and tokens end at once; the calendar address is withdrawn too."""
    user = _member(session, viewer, user_id)
    session.commit()
    deactivate_user(session, user.id, by=viewer.email, now=now)
    stop_feed(session, user.id)
    return user


class InvitationUnusable(LookupError):
    """Unknown, used or expired invitation link."""


def open_invitation(session: Session, token: str, now: datetime) -> tuple[Invitation, PartnerUser]:
    found = session.execute(
        select(Invitation, PartnerUser)
        .join(PartnerUser, PartnerUser.id == Invitation.user_id)
        .where(Invitation.token_hash == token_digest(token))
    ).first()
    if found is None:
        raise InvitationUnusable("no such invitation")
    invitation, user = found
    if invitation.used_at is not None or invitation.expires_at <= now or not user.is_active:
        raise InvitationUnusable("no such invitation")
    return invitation, user


def accept_invitation(session: Session, token: str, password: str, now: datetime) -> PartnerUser:
    begin_write(session)
    invitation, user = open_invitation(session, token, now)
    problem = password_problem(password, user.email)
    if problem is not None:
        raise UserInputError(problem[:1].upper() + problem[1:] + ".")
    user.password_hash = hash_password(password)
    invitation.used_at = now
    session.commit()
    return user
