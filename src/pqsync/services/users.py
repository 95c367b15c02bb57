"""Managing dashboard users and their API tokens (`pqsync users ...`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from pydantic import EmailStr, TypeAdapter, ValidationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from pqsync.db.engine import begin_write
from pqsync.db.lookup import organization_by_ref
from pqsync.db.tables import ApiToken, PartnerUser
from pqsync.domain.roles import ROLES
from pqsync.services.auth import new_token, token_digest
from pqsync.services.passwords import hash_password

MIN_PASSWORD_LENGTH = 8
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
    """Create a user; staff_admin belongs to no organisation, every other role to one."""
    try:
        address = _email_adapter.validate_python(email.strip()).lower()
    except ValidationError:
        raise UserInputError("--email is not a valid email address") from None
    if role not in ROLES:
        raise UserInputError(f"--role must be one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserInputError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    org_id: uuid.UUID | None = None
    begin_write(session)
    if role == "staff_admin":
        if organization:
            raise UserInputError("a staff_admin belongs to no organization: leave out --org")
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
