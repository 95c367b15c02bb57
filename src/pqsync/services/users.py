"""Managing dashboard users and their API tokens (`pqsync users ...`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import EmailStr, TypeAdapter, ValidationError
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from pqsync.db.engine import begin_write
from pqsync.db.lookup import organization_by_ref
from pqsync.db.tables import ApiToken, CalendarFeed, PartnerUser, PasswordReset, UserSession
from pqsync.domain.roles import ROLES, STAFF_ROLES
from pqsync.services.auth import new_token, token_digest
from pqsync.services.passwords import hash_password, password_problem

TOKEN_PREFIX = "pqs_"  # noqa: S105 - a prefix that makes leaked tokens easy to spot

_email_adapter: TypeAdapter[str] = TypeAdapter(EmailStr)


class UserInputError(ValueError):
    """A user cannot be created or found as asked; the message says why in one line."""


@dataclass(frozen=True)
class IssuedToken:
    token: str
    token_id: uuid.UUID


def find_user(session: Session, email: str) -> PartnerUser:
    user = session.scalar(select(PartnerUser).filter_by(email=email.strip().lower()))
    if user is None:
        raise UserInputError("no user with that email")
    return user


def create_user(
    session: Session,
    *,
    email: str,
    role: str,
    password: str,
    organization: str | None = None,
    name: str | None = None,
) -> PartnerUser:
    """Create a user; staff roles belong to no organisation, every other role to one."""
    try:
        address = _email_adapter.validate_python(email.strip()).lower()
    except ValidationError:
        raise UserInputError("--email is not a valid email address") from None
    if role not in ROLES:
        raise UserInputError(f"--role must be one of {', '.join(ROLES)}")
    problem = password_problem(password, address)
    if problem is not None:
        raise UserInputError(problem)
    org_id: uuid.UUID | None = None
    begin_write(session)
    if role in STAFF_ROLES:
        if organization:
            raise UserInputError(f"a {role} belongs to no organization: leave out --org")
    elif not organization:
        raise UserInputError(f"--org is required for role {role}")
    else:
        org = organization_by_ref(session, organization)
        if org is None:
            raise UserInputError(f"no such organization: {organization}")
        org_id = org.id
    if session.scalar(select(PartnerUser.id).filter_by(email=address)) is not None:
        raise UserInputError("a user with that email already exists")
    user = PartnerUser(
        id=uuid.uuid4(),
        email=address,
        name=(name or address.split("@", 1)[0]).strip(),
        role=role,
        organization_id=org_id,
        password_hash=hash_password(password),
        is_active=True,
    )
    session.add(user)
    session.commit()
    return user


def issue_token(
    session: Session, email: str, *, now: datetime, label: str | None = None
) -> IssuedToken:
    """A new bearer token for the user; only its SHA-256 is stored, so show it once."""
    begin_write(session)
    user = find_user(session, email)
    if not user.is_active:
        raise UserInputError("that user is deactivated")
    token = new_token(TOKEN_PREFIX)
    record = ApiToken(
        id=uuid.uuid4(),
        user_id=user.id,
        token_hash=token_digest(token),
        name=label,
        created_at=now,
    )
    session.add(record)
    session.commit()
    return IssuedToken(token=token, token_id=record.id)


@dataclass(frozen=True)
class TokenLine:
    """One API token as `pqsync users tokens` lists it (never the token itself)."""

    id: uuid.UUID
    label: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def list_tokens(session: Session, email: str) -> list[TokenLine]:
    """The user's API tokens, oldest first."""
    user = find_user(session, email)
    rows = session.scalars(
        select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.created_at)
    )
    return [TokenLine(t.id, t.name, t.created_at, t.last_used_at, t.revoked_at) for t in rows]


def revoke_tokens(
    session: Session, email: str, *, now: datetime, token_id: str | None = None
) -> int:
    """Revoke the user's live API tokens (only the one named by `token_id` when given);
    returns how many were revoked."""
    begin_write(session)
    user = find_user(session, email)
    statement = update(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
    if token_id is not None:
        try:
            wanted = uuid.UUID(token_id)
        except ValueError:
            message = "--token-id is not a token id (see `pqsync users tokens`)"
            raise UserInputError(message) from None
        statement = statement.where(ApiToken.id == wanted)
    result = session.execute(statement.values(revoked_at=now))
    session.commit()
    return int(getattr(result, "rowcount", 0) or 0)


@dataclass(frozen=True)
class Deactivation:
    user_id: uuid.UUID
    email: str
    sessions_ended: int
    tokens_revoked: int
    already_inactive: bool


def end_user_access(session: Session, user: PartnerUser, *, by: str, now: datetime) -> Deactivation:
    """Within the caller's transaction: mark the user inactive (once) and end every open
    session, API token and calendar address of theirs."""
    already_inactive = not user.is_active
    if not already_inactive:
        user.is_active = False
        user.deactivated_at = now
        user.deactivated_by = by[:320]
    sessions = session.execute(
        update(UserSession)
        .where(UserSession.user_id == user.id, UserSession.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    tokens = session.execute(
        update(ApiToken)
        .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    # The calendar address ends too (for good: reactivating brings no old address back).
    session.execute(delete(CalendarFeed).where(CalendarFeed.user_id == user.id))
    return Deactivation(
        user_id=user.id,
        email=user.email,
        sessions_ended=int(getattr(sessions, "rowcount", 0) or 0),
        tokens_revoked=int(getattr(tokens, "rowcount", 0) or 0),
        already_inactive=already_inactive,
    )


def deactivate_user(
    session: Session, user_id: uuid.UUID, *, by: str, now: datetime
) -> Deactivation:
    """Take a user off at once: inactive, every open session ended and every API token
    revoked in one transaction, so their next request is refused (401). `by` says who did
    it ("cli", "directory", a staff email); running it again changes nothing."""
    begin_write(session)
    user = session.get(PartnerUser, user_id)
    if user is None:
        raise UserInputError("no such user")
    done = end_user_access(session, user, by=by, now=now)
    session.commit()
    return done


RESET_LIFETIME = timedelta(hours=24)


def issue_reset(session: Session, email: str, *, by: str, now: datetime) -> tuple[str, str]:
    """A one-time password reset token for an active user (valid RESET_LIFETIME; earlier
    unused ones of theirs stop working); returns (token, the user's email)."""
    begin_write(session)
    user = find_user(session, email)
    if not user.is_active:
        raise UserInputError("that user is deactivated")
    session.execute(
        update(PasswordReset)
        .where(PasswordReset.user_id == user.id, PasswordReset.used_at.is_(None))
        .values(used_at=now)
    )
    token = new_token()
    session.add(
        PasswordReset(
            user_id=user.id,
            token_hash=token_digest(token),
            issued_by=by[:320],
            created_at=now,
            expires_at=now + RESET_LIFETIME,
        )
    )
    address = user.email
    session.commit()
    return token, address


def reset_user(session: Session, token: str, *, now: datetime) -> PartnerUser | None:
    """The active user a live (unused, unexpired) reset token is for, or None."""
    row = session.execute(
        select(PasswordReset, PartnerUser)
        .join(PartnerUser, PartnerUser.id == PasswordReset.user_id)
        .where(
            PasswordReset.token_hash == token_digest(token),
            PasswordReset.used_at.is_(None),
            PasswordReset.expires_at > now,
            PartnerUser.is_active.is_(True),
        )
    ).first()
    return row[1] if row is not None else None


def use_reset(session: Session, token: str, password: str, *, now: datetime) -> None:
    """Set the password a reset link was issued for; the link then stops working."""
    begin_write(session)
    row = session.execute(
        select(PasswordReset, PartnerUser)
        .join(PartnerUser, PartnerUser.id == PasswordReset.user_id)
        .where(
            PasswordReset.token_hash == token_digest(token),
            PasswordReset.used_at.is_(None),
            PasswordReset.expires_at > now,
            PartnerUser.is_active.is_(True),
        )
    ).first()
    if row is None:
        raise UserInputError("this reset link has expired or was used already")
    reset, user = row
    _new_password(session, user, password, now)
    reset.used_at = now
    session.commit()


def _new_password(session: Session, user: PartnerUser, password: str, now: datetime) -> int:
    problem = password_problem(password, user.email)
    if problem is not None:
        raise UserInputError(problem)
    user.password_hash = hash_password(password)
    ended = session.execute(
        update(UserSession)
        .where(UserSession.user_id == user.id, UserSession.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return int(getattr(ended, "rowcount", 0) or 0)


def set_password(session: Session, email: str, password: str, *, now: datetime) -> int:
    """Give the user a new password (checked: length, not a common one) and end their open
    sessions, so that whoever knew the old one is signed out; returns sessions ended."""
    begin_write(session)
    user = find_user(session, email)
    ended = _new_password(session, user, password, now)
    session.commit()
    return ended
