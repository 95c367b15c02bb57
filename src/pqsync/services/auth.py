"""Who is calling: password logins with sessions, bearer tokens, and login throttling.

Only SHA-256 digests of session cookies, device cookies and bearer tokens are stored; emails
in `login_attempts` are keyed digests (HMAC-SHA256 with the secret key), never the address.

Throttling cannot be turned against the real user: a browser that has signed in to an
account before holds a device cookie for it, and its attempts count only against that
device. Attempts from anywhere else back off per (address, account) and, past a per-account
cap, wait; none of them can stop a known device or another account behind the same address.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session

from pqsync.db.engine import begin_write
from pqsync.db.tables import ApiToken, LoginAttempt, Organization, PartnerUser, UserSession
from pqsync.domain.roles import STAFF_ROLES
from pqsync.services.passwords import hash_password, verify_password

SESSION_LIFETIME = timedelta(hours=12)
DEVICE_LIFETIME = timedelta(days=180)
THROTTLE_WINDOW = timedelta(minutes=15)
# Failures (within the window, since the account's last successful login) before waiting:
FREE_FAILURES = 5  # per (address, account) and per known device
ACCOUNT_CAP = 20  # per account, from browsers that are not a known device of it
FIRST_BACKOFF = timedelta(minutes=1)  # doubles with every further failure, up to the window
# Writing `last_used_at` on every request would turn each read into a write.
TOKEN_USE_RESOLUTION = timedelta(minutes=5)
SESSION_IDLE_TIMEOUT = timedelta(minutes=30)
# A session's `last_seen_at` is written at most this often.
SESSION_SEEN_RESOLUTION = timedelta(minutes=1)

Clock = Callable[[], datetime]


def token_digest(token: str) -> str:
    """The SHA-256 (hex) under which a session cookie or bearer token is stored."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(prefix: str = "") -> str:
    """A fresh random secret (256 bits), URL-safe."""
    return prefix + secrets.token_urlsafe(32)


def secrets_match(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented secret with the expected one; an empty
    secret, presented or expected, never matches."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def _free_at(failures: list[datetime], cap: int, now: datetime) -> datetime | None:
    """With `cap` failures (newest first) in the window: when the oldest leaves it."""
    if len(failures) < cap:
        return None
    frees = failures[cap - 1] + THROTTLE_WINDOW
    return frees if frees > now else None


@cache
def _dummy_hash() -> str:
    # Verifying against this when no user matches keeps the answer time the same.
    return hash_password(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class Principal:
    """An authenticated user and how they proved it (`cookie` or `bearer`)."""

    user_id: uuid.UUID
    email: str
    name: str
    role: str
    organization_id: uuid.UUID | None
    organization_name: str | None
    via: str
    session_id: uuid.UUID | None = None
    csrf_token: str | None = None

    @property
    def is_staff(self) -> bool:
        return self.role in STAFF_ROLES


class InvalidCredentials(Exception):
    """Wrong email or password, or an inactive user (the caller is not told which)."""


class LoginThrottled(Exception):
    """Too many failed logins for this email or address; try again at `retry_at`."""

    def __init__(self, retry_at: datetime) -> None:
        self.retry_at = retry_at
        super().__init__(f"too many failed logins; try again after {retry_at.isoformat()}")


@dataclass(frozen=True)
class LoginResult:
    principal: Principal
    cookie_token: str
    expires_at: datetime
    device_token: str  # for the device cookie: marks this browser as one the user signed in on


def _principal(
    session: Session,
    user: PartnerUser,
    via: str,
    session_id: uuid.UUID | None = None,
    csrf_token: str | None = None,
) -> Principal:
    org_name = (
        session.scalar(select(Organization.name).where(Organization.id == user.organization_id))
        if user.organization_id is not None
        else None
    )
    return Principal(
        user_id=user.id,
        email=user.email,
        name=user.name,
        role=user.role,
        organization_id=user.organization_id,
        organization_name=org_name,
        via=via,
        session_id=session_id,
        csrf_token=csrf_token,
    )


class Authenticator:
    """Logins, sessions and bearer tokens against the database, with an injected clock."""

    def __init__(
        self,
        secret_key: str,
        clock: Clock,
        *,
        idle_timeout: timedelta = SESSION_IDLE_TIMEOUT,
        lifetime: timedelta = SESSION_LIFETIME,
    ) -> None:
        self._secret_key = secret_key.encode()
        self._clock = clock
        self.idle_timeout = idle_timeout
        self.lifetime = lifetime

    def email_digest(self, email: str) -> str:
        normalized = email.strip().lower().encode()
        return hmac.new(self._secret_key, normalized, hashlib.sha256).hexdigest()

    # -- logins --------------------------------------------------------------------------

    def device_token(self, email_hash: str) -> str:
        """A device cookie for one account: a random nonce signed with the secret key."""
        nonce = secrets.token_urlsafe(16)
        return f"{nonce}.{self._device_mac(email_hash, nonce)}"

    def _device_mac(self, email_hash: str, nonce: str) -> str:
        message = f"device|{email_hash}|{nonce}".encode()
        return hmac.new(self._secret_key, message, hashlib.sha256).hexdigest()

    def known_device(self, device_token: str | None, email_hash: str) -> bool:
        """Whether the device cookie was issued to this account by a successful login."""
        if not device_token or device_token.count(".") != 1:
            return False
        nonce, mac = device_token.split(".")
        return hmac.compare_digest(mac.encode(), self._device_mac(email_hash, nonce).encode())

    def login(
        self,
        session: Session,
        email: str,
        password: str,
        client_ip: str | None,
        device_token: str | None = None,
    ) -> LoginResult:
        """Check a password login and open a session; raise LoginThrottled or
        InvalidCredentials. Every attempt that is not throttled is recorded."""
        now = self._clock()
        email_hash = self.email_digest(email)
        device_hash = (
            token_digest(device_token)
            if device_token is not None and self.known_device(device_token, email_hash)
            else None
        )
        session.commit()
        begin_write(session)
        retry_at = self.login_retry_at(session, email_hash, client_ip, device_hash, now)
        if retry_at is not None:
            raise LoginThrottled(retry_at)
        user = session.scalar(select(PartnerUser).filter_by(email=email.strip().lower()))
        password_hash = user.password_hash if user is not None else None
        valid = verify_password(password_hash or _dummy_hash(), password)
        succeeded = bool(valid and user is not None and password_hash and user.is_active)
        session.add(
            LoginAttempt(
                email_hash=email_hash,
                client_ip=client_ip,
                device_hash=device_hash,
                succeeded=succeeded,
                attempted_at=now,
            )
        )
        if not succeeded or user is None:
            session.commit()
            raise InvalidCredentials()
        cookie_token = new_token()
        record = UserSession(
            id=uuid.uuid4(),
            user_id=user.id,
            token_hash=token_digest(cookie_token),
            csrf_token=new_token(),
            created_at=now,
            expires_at=now + self.lifetime,
            last_seen_at=now,
        )
        session.add(record)
        session.commit()
        principal = _principal(session, user, "cookie", record.id, record.csrf_token)
        if device_token is None or device_hash is None:
            device_token = self.device_token(email_hash)
        return LoginResult(principal, cookie_token, record.expires_at, device_token)

    def login_retry_at(
        self,
        session: Session,
        email_hash: str,
        client_ip: str | None,
        device_hash: str | None,
        now: datetime,
    ) -> datetime | None:
        """When the next login may be tried, or None if it may be tried now.

        Failures count within THROTTLE_WINDOW and since the account's last successful login.
        A known device waits once it has FREE_FAILURES of its own. Any other browser backs
        off per (address, account) after FREE_FAILURES (FIRST_BACKOFF, doubling), and waits
        while the account has ACCOUNT_CAP failures from browsers that are not known devices.
        """
        last_success = session.scalar(
            select(LoginAttempt.attempted_at)
            .where(LoginAttempt.email_hash == email_hash, LoginAttempt.succeeded.is_(True))
            .order_by(LoginAttempt.attempted_at.desc())
            .limit(1)
        )
        since = max(now - THROTTLE_WINDOW, last_success or now - THROTTLE_WINDOW)

        def failures(*conditions: ColumnElement[bool], limit: int) -> list[datetime]:
            return list(
                session.scalars(
                    select(LoginAttempt.attempted_at)
                    .where(
                        LoginAttempt.email_hash == email_hash,
                        LoginAttempt.succeeded.is_(False),
                        LoginAttempt.attempted_at > since,
                        *conditions,
                    )
                    .order_by(LoginAttempt.attempted_at.desc())
                    .limit(limit)
                )
            )

        if device_hash is not None:
            own = failures(LoginAttempt.device_hash == device_hash, limit=FREE_FAILURES)
            return _free_at(own, FREE_FAILURES, now)
        unknown = LoginAttempt.device_hash.is_(None)
        same_address = (
            LoginAttempt.client_ip == client_ip
            if client_ip is not None
            else LoginAttempt.client_ip.is_(None)
        )
        pair = failures(unknown, same_address, limit=ACCOUNT_CAP)
        waits = [_free_at(failures(unknown, limit=ACCOUNT_CAP), ACCOUNT_CAP, now)]
        if len(pair) >= FREE_FAILURES:
            backoff = min(FIRST_BACKOFF * 2 ** (len(pair) - FREE_FAILURES), THROTTLE_WINDOW)
            waits.append(pair[0] + backoff if pair[0] + backoff > now else None)
        due = [wait for wait in waits if wait is not None]
        return max(due) if due else None

    # -- sessions ------------------------------------------------------------------------

    def from_session_cookie(self, session: Session, cookie_token: str) -> Principal | None:
        """The user of a live session (not revoked, within its lifetime, not idle longer
        than the idle timeout), or None; notes that it was used."""
        now = self._clock()
        row = session.execute(
            select(UserSession, PartnerUser)
            .join(PartnerUser, PartnerUser.id == UserSession.user_id)
            .where(
                UserSession.token_hash == token_digest(cookie_token),
                UserSession.revoked_at.is_(None),
                UserSession.expires_at > now,
                PartnerUser.is_active.is_(True),
            )
        ).first()
        if row is None:
            return None
        record, user = row
        seen = record.last_seen_at or record.created_at
        if now - seen > self.idle_timeout:
            return None
        principal = _principal(session, user, "cookie", record.id, record.csrf_token)
        if now - seen > SESSION_SEEN_RESOLUTION:
            session.commit()  # end the read before taking the write lock
            begin_write(session)
            session.execute(
                update(UserSession).where(UserSession.id == record.id).values(last_seen_at=now)
            )
            session.commit()
        return principal

    def logout(self, session: Session, session_id: uuid.UUID) -> None:
        """Revoke a session so its cookie no longer works."""
        session.commit()  # end the request's read before taking the write lock
        begin_write(session)
        session.execute(
            update(UserSession)
            .where(UserSession.id == session_id, UserSession.revoked_at.is_(None))
            .values(revoked_at=self._clock())
        )
        session.commit()

    def logout_everywhere(self, session: Session, user_id: uuid.UUID) -> int:
        """End every session of the user (every browser); returns how many were open."""
        session.commit()
        begin_write(session)
        ended = session.execute(
            update(UserSession)
            .where(UserSession.user_id == user_id, UserSession.revoked_at.is_(None))
            .values(revoked_at=self._clock())
        )
        session.commit()
        return int(getattr(ended, "rowcount", 0) or 0)

    # -- bearer tokens -------------------------------------------------------------------

    def from_bearer(self, session: Session, token: str) -> Principal | None:
        """The user of an unrevoked API token, or None; notes when it was last used."""
        now = self._clock()
        row = session.execute(
            select(ApiToken, PartnerUser)
            .join(PartnerUser, PartnerUser.id == ApiToken.user_id)
            .where(
                ApiToken.token_hash == token_digest(token),
                ApiToken.revoked_at.is_(None),
                PartnerUser.is_active.is_(True),
            )
        ).first()
        if row is None:
            return None
        api_token, user = row
        principal = _principal(session, user, "bearer")
        if api_token.last_used_at is None or now - api_token.last_used_at > TOKEN_USE_RESOLUTION:
            session.commit()  # end the read before taking the write lock
            begin_write(session)
            session.execute(
                update(ApiToken).where(ApiToken.id == api_token.id).values(last_used_at=now)
            )
            session.commit()
        return principal
