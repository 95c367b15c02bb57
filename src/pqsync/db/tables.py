"""The schema (SQLAlchemy 2 typed ORM). Migrations in db/migrations must match it."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Date,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC, returns aware UTC datetimes on every backend (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        utc = value.astimezone(UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON}


class Organization(Base):
    __tablename__ = "organizations"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    slug: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64), default="America/Denver")
    window_days_back: Mapped[int | None] = mapped_column(Integer)
    window_days_ahead: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=_now)


class PartnerUser(Base):
    __tablename__ = "partner_users"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    organization_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    role: Mapped[str] = mapped_column(String(32))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=_now)
    deactivated_at: Mapped[datetime | None] = mapped_column()
    # Who took the user off, as written then ("cli", "directory", a staff email).
    deactivated_by: Mapped[str | None] = mapped_column(String(320))


class Patient(Base):
    __tablename__ = "patients"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    first_name: Mapped[str] = mapped_column(String(100))
    last_name: Mapped[str] = mapped_column(String(100))
    # Stored lower-cased: IntakeQ's emails differ from ours in case.
    email: Mapped[str] = mapped_column(String(320), unique=True)
    date_of_birth: Mapped[date | None] = mapped_column(Date)
    intakeq_client_id: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    created_at: Mapped[datetime] = mapped_column(default=_now)
    updated_at: Mapped[datetime] = mapped_column(default=_now, onupdate=_now)

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()


class Affiliation(Base):
    __tablename__ = "patient_organization_affiliations"
    __table_args__ = (UniqueConstraint("patient_id", "organization_id"),)
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"))
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    roi_consent_status: Mapped[str] = mapped_column(String(32), default="missing")
    roi_consent_expires_on: Mapped[date | None] = mapped_column(Date)
    last_practiceq_sync_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=_now)

    patient: Mapped[Patient] = relationship(lazy="joined")


class Provider(Base):
    __tablename__ = "providers"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=_now)


class ProviderIntakeQSettings(Base):
    __tablename__ = "provider_intakeq_settings"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    provider_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("providers.id", ondelete="CASCADE"), unique=True
    )
    intakeq_practitioner_id: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=_now)


class Service(Base):
    __tablename__ = "services"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200))
    intakeq_service_id: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=_now)


class Appointment(Base):
    __tablename__ = "appointments"
    __table_args__ = (
        Index("ix_appointments_patient_start", "patient_id", "start_time"),
        # The week view and the feed read a time range across every resident (issue 25).
        Index("ix_appointments_start_time", "start_time"),
    )
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    pq_appointment_id: Mapped[str] = mapped_column(String(64), unique=True)
    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"))
    provider_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("providers.id", ondelete="SET NULL")
    )
    service_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("services.id", ondelete="SET NULL")
    )
    intakeq_practitioner_id: Mapped[str | None] = mapped_column(String(64), index=True)
    intakeq_client_id: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(32))
    intakeq_status: Mapped[str | None] = mapped_column(String(64))
    start_time: Mapped[datetime] = mapped_column()
    end_time: Mapped[datetime | None] = mapped_column()
    location_name: Mapped[str | None] = mapped_column(String(200))
    # `metadata` is reserved by SQLAlchemy's declarative base; the column keeps the name.
    extra: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    intakeq_last_modified: Mapped[datetime | None] = mapped_column()
    deleted_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=_now)
    updated_at: Mapped[datetime] = mapped_column(default=_now)
    last_synced_at: Mapped[datetime | None] = mapped_column()


class SyncLog(Base):
    __tablename__ = "sync_logs"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    sync_type: Mapped[str] = mapped_column(String(32))  # patient | organization | nightly
    patient_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("patients.id", ondelete="SET NULL"), index=True
    )
    organization_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="SET NULL"), index=True
    )
    triggered_by: Mapped[str] = mapped_column(String(32))  # user | schedule | webhook | cli
    # manual_patient | manual_org | automated_daily | webhook (domain.run_types.run_type)
    run_type: Mapped[str | None] = mapped_column(String(32), index=True)
    triggered_by_user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("partner_users.id", ondelete="SET NULL")
    )
    status: Mapped[str] = mapped_column(String(16))  # running | success | partial | failed
    date_range_start: Mapped[date | None] = mapped_column(Date)
    date_range_end: Mapped[date | None] = mapped_column(Date)
    appointments_new: Mapped[int] = mapped_column(default=0)
    appointments_updated: Mapped[int] = mapped_column(default=0)
    appointments_unchanged: Mapped[int] = mapped_column(default=0)
    appointments_deleted: Mapped[int] = mapped_column(default=0)
    appointments_errors: Mapped[int] = mapped_column(default=0)
    requests_made: Mapped[int] = mapped_column(default=0)
    error_message: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    started_at: Mapped[datetime] = mapped_column(default=_now, index=True)
    finished_at: Mapped[datetime | None] = mapped_column()


class PatientActivity(Base):
    __tablename__ = "patient_activity_log"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    # RESTRICT: a patient with a change history cannot be deleted (erase them instead).
    patient_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("patients.id", ondelete="RESTRICT"), index=True
    )
    appointment_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("appointments.id", ondelete="SET NULL")
    )
    sync_log_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("sync_logs.id", ondelete="SET NULL"), index=True
    )
    activity_type: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text)
    changes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    actor: Mapped[str] = mapped_column(String(32))  # user | schedule | webhook | cli
    actor_user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("partner_users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(default=_now, index=True)


class IntakeQRequest(Base):
    """One request sent to IntakeQ, for the shared per-key budget (see intakeq/budget.py)."""

    __tablename__ = "intakeq_request_log"
    __table_args__ = (Index("ix_intakeq_request_log_key_sent", "key_fingerprint", "sent_at"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    key_fingerprint: Mapped[str] = mapped_column(String(64))
    sent_at: Mapped[datetime] = mapped_column()


class ApiToken(Base):
    """A bearer token for the HTTP API; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("partner_users.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=_now)
    last_used_at: Mapped[datetime | None] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()


class UserSession(Base):
    """A browser login; the cookie holds a random token whose SHA-256 is stored here."""

    __tablename__ = "user_sessions"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("partner_users.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=_now)
    expires_at: Mapped[datetime] = mapped_column()
    revoked_at: Mapped[datetime | None] = mapped_column()
    # The idle timeout counts from here (written at most once a minute).
    last_seen_at: Mapped[datetime | None] = mapped_column()


class PasswordReset(Base):
    """A one-time password reset link staff issued; only the token's SHA-256 is stored."""

    __tablename__ = "password_resets"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("partner_users.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    issued_by: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column()
    expires_at: Mapped[datetime] = mapped_column()
    used_at: Mapped[datetime | None] = mapped_column()


class LoginAttempt(Base):
    """Failed and successful logins, to slow down guessing. Emails are stored hashed."""

    __tablename__ = "login_attempts"
    __table_args__ = (Index("ix_login_attempts_email_at", "email_hash", "attempted_at"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    email_hash: Mapped[str] = mapped_column(String(64))
    client_ip: Mapped[str | None] = mapped_column(String(64))
    # SHA-256 of the device cookie when the attempt came from a known device of the account.
    device_hash: Mapped[str | None] = mapped_column(String(64))
    succeeded: Mapped[bool] = mapped_column(default=False)
    attempted_at: Mapped[datetime] = mapped_column(default=_now)


class SyncLock(Base):
    """One running sync per scope, across processes: a lease that expires if its holder dies."""

    __tablename__ = "sync_locks"
    scope_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    run_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    holder: Mapped[str] = mapped_column(String(200))
    acquired_at: Mapped[datetime] = mapped_column()
    expires_at: Mapped[datetime] = mapped_column()


class SyncState(Base):
    """Small named facts the sync keeps between runs (watermarks, the practice's size)."""

    __tablename__ = "sync_state"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=_now)


class NightlyClaim(Base):
    """One organisation's nightly run for one local day: the row's insert is the claim, so
    however many workers tick, the first insert wins and the others see the key taken."""

    __tablename__ = "nightly_claims"
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    local_day: Mapped[date] = mapped_column(Date, primary_key=True)
    due_at: Mapped[datetime] = mapped_column()
    claimed_at: Mapped[datetime] = mapped_column()
    run_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    worker: Mapped[str] = mapped_column(String(200))


class Alert(Base):
    """An alert raised (a failure streak opened, a recovery, a missed nightly run), with how it
    was delivered; the staff page lists them. Never holds patient data."""

    __tablename__ = "alerts"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    key: Mapped[str] = mapped_column(String(200), index=True)
    # failure | recovery | missed | discrepancy | accurate (a verification's streak)
    kind: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    organization_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="SET NULL")
    )
    run_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # email (delivered) | log (no mail set up) | retrying | failed (given up) | cancelled
    delivery: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=_now, index=True)
    # Mail tries so far, and when a mail not yet delivered is tried again.
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime | None] = mapped_column()


class AlertStreak(Base):
    """Whether a kind of run (per organisation) is failing now; flipped with a conditional
    UPDATE, so one streak gives one mail however many workers see its failures."""

    __tablename__ = "alert_streaks"
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    failing: Mapped[bool] = mapped_column(default=False)
    failures: Mapped[int] = mapped_column(default=0)
    changed_at: Mapped[datetime] = mapped_column()


class WorkerHeartbeat(Base):
    """When each queue worker was last seen alive (`/healthz`)."""

    __tablename__ = "worker_heartbeats"
    worker: Mapped[str] = mapped_column(String(200), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column()


class PatientAccess(Base):
    """One read of one patient's data: who, when, through which view. The trail outlives
    users and patients (no foreign keys: deleting either never deletes it); nothing prunes
    it before the retention floor (services/access.py)."""

    __tablename__ = "patient_access_log"
    __table_args__ = (
        Index("ix_patient_access_log_patient_at", "patient_id", "accessed_at"),
        Index("ix_patient_access_log_user_at", "user_id", "accessed_at"),
    )
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    patient_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    user_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # Kept as written at the time: the user may be renamed, deactivated or removed later.
    user_email: Mapped[str] = mapped_column(String(320))
    user_role: Mapped[str] = mapped_column(String(32))
    organization_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    via: Mapped[str] = mapped_column(String(16))  # cookie | bearer | cli
    view: Mapped[str] = mapped_column(String(64))  # roster | patient_page | api_... | export
    detail: Mapped[str | None] = mapped_column(String(300))
    request_id: Mapped[str | None] = mapped_column(String(64))
    accessed_at: Mapped[datetime] = mapped_column(default=_now, index=True)


class WebhookEvent(Base):
    """A received webhook's fate (queued, coalesced, limited, foreign practice, ignored), by
    day, for rate limits and counts; holds ids only. Stored before the webhook is answered,
    a queued or coalesced event is the queue of record until `processed_at` is set."""

    __tablename__ = "webhook_events"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    coalesce_key: Mapped[str] = mapped_column(String(200))
    # queued|coalesced|limited|foreign|ignored, or failed (its re-fetch failed every try)
    outcome: Mapped[str] = mapped_column(String(16))
    appointment_id: Mapped[str | None] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column()
    # For a queued event: when its re-fetch runs; events of its key until then join it.
    runs_at: Mapped[datetime | None] = mapped_column()
    processed_at: Mapped[datetime | None] = mapped_column()
    # Re-fetches of it that failed (IntakeQ down, 500s, timeouts), the last one's reason
    # (no names), and when the tick may try again; after the last try its outcome is failed.
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(String(200))
    retry_at: Mapped[datetime | None] = mapped_column()

    __table_args__ = (
        Index("ix_webhook_events_key_at", "coalesce_key", "received_at"),
        Index("ix_webhook_events_received_at", "received_at"),
        Index("ix_webhook_events_pending", "processed_at", "outcome"),
    )


class Verification(Base):
    """One `pqsync verify`: what we store in the window compared with what IntakeQ lists
    (missing, extra and stale appointments, by IntakeQ id). Holds ids, never names."""

    __tablename__ = "verifications"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    scope: Mapped[str] = mapped_column(String(16))  # all | organization
    organization_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="SET NULL")
    )
    triggered_by: Mapped[str] = mapped_column(String(16))  # cli | schedule
    # running | accurate | discrepancies | failed | skipped
    status: Mapped[str] = mapped_column(String(16))
    # The weekly slot a scheduled verification claims (one per slot however many workers).
    slot: Mapped[str | None] = mapped_column(String(32), unique=True)
    window_start: Mapped[date] = mapped_column(Date)
    window_end: Mapped[date] = mapped_column(Date)
    compared: Mapped[int] = mapped_column(default=0)
    missing: Mapped[int] = mapped_column(default=0)
    extra: Mapped[int] = mapped_column(default=0)
    stale: Mapped[int] = mapped_column(default=0)
    requests_made: Mapped[int] = mapped_column(default=0)
    error_message: Mapped[str | None] = mapped_column(Text)
    discrepancies: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    started_at: Mapped[datetime] = mapped_column(index=True)
    finished_at: Mapped[datetime | None] = mapped_column()


class AttentionHandled(Base):
    """A 'needs attention' item a partner marked handled (who, when). The key names the
    item (a missed appointment's id, the consent's expiry date), so a new one shows again."""

    __tablename__ = "attention_handled"
    __table_args__ = (UniqueConstraint("organization_id", "patient_id", "item_key"),)
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"))
    item_key: Mapped[str] = mapped_column(String(120))
    handled_by_user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("partner_users.id", ondelete="SET NULL")
    )
    handled_by_name: Mapped[str] = mapped_column(String(200))
    handled_at: Mapped[datetime] = mapped_column()


class CalendarFeed(Base):
    """A user's secret calendar address: only the SHA-256 of its token is stored."""

    __tablename__ = "calendar_feeds"
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("partner_users.id", ondelete="CASCADE"), primary_key=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=_now)


class CaseworkPreferences(Base):
    """A partner user's casework settings: the daily digest, the dismissed changes."""

    __tablename__ = "casework_preferences"
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("partner_users.id", ondelete="CASCADE"), primary_key=True
    )
    digest_opt_in: Mapped[bool] = mapped_column(default=False)
    digest_sent_on: Mapped[date | None] = mapped_column(Date)
    changes_dismissed_at: Mapped[datetime | None] = mapped_column()


class Invitation(Base):
    """A partner admin's invitation: a one-time link (only its SHA-256 stored) with which the
    invited user sets their password."""

    __tablename__ = "invitations"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("partner_users.id", ondelete="CASCADE"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    invited_by_user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("partner_users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(default=_now)
    expires_at: Mapped[datetime] = mapped_column()
    used_at: Mapped[datetime | None] = mapped_column()


class PushRequest(Base):
    """A booking, cancellation or reschedule pqsync sends to IntakeQ, kept until IntakeQ has
    it: claimed by one worker at a time (`sending`), retried from the queue, never sent
    twice (a retried booking first looks for the one a lost answer may have made)."""

    __tablename__ = "push_requests"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    kind: Mapped[str] = mapped_column(String(16))  # book | cancel | reschedule
    patient_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("patients.id", ondelete="SET NULL")
    )
    # IntakeQ's Id: the target of a cancel or reschedule; learned by a booking.
    intakeq_appointment_id: Mapped[str | None] = mapped_column(String(64))
    body: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), index=True)  # pending|sending|done|failed
    attempts: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(Text)
    requested_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=_now)
    updated_at: Mapped[datetime] = mapped_column(default=_now)
    claimed_at: Mapped[datetime | None] = mapped_column()
