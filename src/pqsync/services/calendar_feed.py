"""A partner user's calendar feed: a secret address (`/calendar/TOKEN.ics`, RFC 5545) with
the organisation's consenting residents' upcoming appointments.

Only the SHA-256 of the address's token is stored; the address is shown once, when it is
made or reset (a reset ends the old one). The feed answers only while its user is active, a
partner of an existing organisation, and only with the residents whose ROI consent with
that organisation is active today: revoking a consent takes the resident's appointments out
of the feed at its next poll. Each event holds what the user sees on the dashboard, and no
more: the resident's first name and initial, the time in the organisation's zone, the
service, provider and location.

Each resident also has an address of their own for each user with a feed
(`/calendar/SECRET/residents/PATIENT_UUID.ics`), shown on the resident's page to that user:
the secret is an HMAC, under the server's secret key, of the user's stored token digest and
the resident's id, so it is derived again for the page and never stored. It holds only that
resident's appointments, with the same detail, and answers 404 (not an empty calendar) the
moment the resident's consent with the organisation is revoked or expires, the resident
leaves the organisation, the user is deactivated or leaves it, or the user resets or stops
their address (a new token digest, a new secret).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from icalendar import Calendar, Event
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from pqsync.db.provider_names import provider_name_column
from pqsync.db.tables import (
    Affiliation,
    Appointment,
    CalendarFeed,
    Organization,
    PartnerUser,
    Patient,
    Provider,
    Service,
)
from pqsync.domain import visibility
from pqsync.domain.roles import PARTNER_ROLES
from pqsync.services.auth import new_token, token_digest
from pqsync.services.casework import consent_active_clause, org_today, org_zone
from pqsync.services.dashboard import NOT_UPCOMING

FEED_DAYS_AHEAD = 90
TOKEN_PREFIX = "cal_"  # noqa: S105 - a marker, not a secret
RESIDENT_PREFIX = "calr_"


class NoFeed(LookupError):
    """No such address, or it no longer answers (reset, user or organisation gone)."""


@dataclass(frozen=True)
class FeedState:
    exists: bool
    created_at: datetime | None


def feed_state(session: Session, user_id: uuid.UUID) -> FeedState:
    feed = session.get(CalendarFeed, user_id)
    return FeedState(feed is not None, feed.created_at if feed else None)


def may_have_feed(role: str, organization_id: uuid.UUID | None) -> bool:
    """Partner users of an organisation; the clinic's staff have no single organisation."""
    return role in PARTNER_ROLES and organization_id is not None


def reset_address(session: Session, user_id: uuid.UUID, now: datetime) -> str:
    """A new secret token for the user's feed (the old address stops answering at once)."""
    token = new_token(TOKEN_PREFIX)
    session.execute(delete(CalendarFeed).where(CalendarFeed.user_id == user_id))
    session.add(CalendarFeed(user_id=user_id, token_hash=token_digest(token), created_at=now))
    session.commit()
    return token


def stop_feed(session: Session, user_id: uuid.UUID) -> None:
    session.execute(delete(CalendarFeed).where(CalendarFeed.user_id == user_id))
    session.commit()


@dataclass(frozen=True)
class Feed:
    user: PartnerUser
    organization_id: uuid.UUID
    patient_ids: list[uuid.UUID]
    body: bytes

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha256(self.body).hexdigest()[:32] + '"'


def feed_user(session: Session, token: str) -> tuple[PartnerUser, Organization]:
    """The active partner user and organisation behind a token, or NoFeed."""
    if not token.startswith(TOKEN_PREFIX):
        raise NoFeed("no such feed")
    found = session.execute(
        select(PartnerUser, Organization)
        .join(CalendarFeed, CalendarFeed.user_id == PartnerUser.id)
        .join(Organization, Organization.id == PartnerUser.organization_id)
        .where(CalendarFeed.token_hash == token_digest(token))
    ).first()
    if found is None:
        raise NoFeed("no such feed")
    user, org = found
    if not user.is_active or not may_have_feed(user.role, user.organization_id):
        raise NoFeed("no such feed")
    return user, org


def feed(session: Session, token: str, now: datetime) -> Feed:
    """The organisation's feed behind a secret token (NoFeed when it does not answer)."""
    user, org = feed_user(session, token)
    return _feed(session, user, org, now, name=f"{org.name}: appointments")


def resident_secret(secret_key: str, token_hash: str, patient_id: uuid.UUID) -> str:
    """The secret of a user's address for one resident (derived, never stored)."""
    mac = hmac.new(
        secret_key.encode(),
        f"resident-calendar:{token_hash}:{patient_id}".encode(),
        hashlib.sha256,
    ).digest()
    return RESIDENT_PREFIX + base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def resident_path(
    session: Session, user_id: uuid.UUID, patient_id: uuid.UUID, secret_key: str
) -> str | None:
    """The path of the user's address for one resident, or None while they have no feed."""
    feed_row = session.get(CalendarFeed, user_id)
    if feed_row is None:
        return None
    secret = resident_secret(secret_key, feed_row.token_hash, patient_id)
    return f"/calendar/{secret}/residents/{patient_id}.ics"


def resident_feed(
    session: Session, secret: str, patient_id: uuid.UUID, now: datetime, secret_key: str
) -> Feed:
    """One resident's feed for the user whose secret it is (NoFeed when it does not answer:
    no such secret, the user inactive or no longer a partner of an organisation the resident
    belongs to, or the resident's consent with it not active today)."""
    if not secret.startswith(RESIDENT_PREFIX):
        raise NoFeed("no such feed")
    # The users with a feed in the resident's organisations: a handful to try.
    candidates = session.execute(
        select(PartnerUser, Organization, CalendarFeed.token_hash, Affiliation)
        .join(CalendarFeed, CalendarFeed.user_id == PartnerUser.id)
        .join(Organization, Organization.id == PartnerUser.organization_id)
        .join(Affiliation, Affiliation.organization_id == Organization.id)
        .where(Affiliation.patient_id == patient_id)
    ).all()
    for user, org, token_hash, affiliation in candidates:
        expected = resident_secret(secret_key, token_hash, patient_id)
        if not hmac.compare_digest(expected.encode(), secret.encode()):
            continue
        if not user.is_active or not may_have_feed(user.role, user.organization_id):
            raise NoFeed("no such feed")
        consent = visibility.consent_active(
            affiliation.roi_consent_status,
            affiliation.roi_consent_expires_on,
            org_today(org, now),
        )
        if not consent:
            raise NoFeed("no such feed")
        patient = affiliation.patient
        initial = f" {patient.last_name[:1]}." if patient.last_name else ""
        name = f"{patient.first_name}{initial}: appointments ({org.name})"
        return _feed(session, user, org, now, name=name, patient_id=patient_id)
    raise NoFeed("no such feed")


def _feed(
    session: Session,
    user: PartnerUser,
    org: Organization,
    now: datetime,
    *,
    name: str,
    patient_id: uuid.UUID | None = None,
) -> Feed:
    """The calendar of the organisation's consenting residents (or of one of them)."""
    zone = org_zone(org)
    today: date = org_today(org, now)
    one_resident = [] if patient_id is None else [Appointment.patient_id == patient_id]
    rows = session.execute(
        select(
            Appointment.id,
            Appointment.patient_id,
            Appointment.start_time,
            Appointment.end_time,
            Appointment.status,
            Appointment.location_name,
            Appointment.updated_at,
            Patient.first_name,
            Patient.last_name,
            provider_name_column(),
            Service.name,
        )
        .join(Affiliation, Affiliation.patient_id == Appointment.patient_id)
        .join(Patient, Patient.id == Appointment.patient_id)
        .outerjoin(Provider, Provider.id == Appointment.provider_id)
        .outerjoin(Service, Service.id == Appointment.service_id)
        .where(
            Affiliation.organization_id == org.id,
            consent_active_clause(today),
            Appointment.deleted_at.is_(None),
            Appointment.start_time >= now - timedelta(hours=12),
            Appointment.start_time < now + timedelta(days=FEED_DAYS_AHEAD),
            Appointment.status.not_in(NOT_UPCOMING),
            *one_resident,
        )
        .order_by(Appointment.start_time, Appointment.id)
    ).all()
    calendar = Calendar()
    calendar.add("prodid", "-//pqsync//appointments//EN")
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("x-wr-calname", name)
    patient_ids: list[uuid.UUID] = []
    for (
        appt_id,
        patient_id,
        start,
        end,
        status,
        location,
        updated,
        first,
        last,
        provider,
        service,
    ) in rows:
        patient_ids.append(patient_id)
        event = Event()
        event.add("uid", f"{appt_id}@pqsync")
        # The last change we stored, not the time of the poll: an unchanged feed is the
        # same bytes (and the same ETag).
        event.add("dtstamp", updated)
        event.add("dtstart", start.astimezone(zone))
        event.add("dtend", (end or start + timedelta(hours=1)).astimezone(zone))
        initial = f" {last[:1]}." if last else ""
        event.add("summary", f"{first}{initial}: {service or 'Appointment'}")
        if location:
            event.add("location", location)
        details = [f"Provider: {provider or 'not yet known'}"]
        if status == "scheduled":
            details.append("Awaiting confirmation")
        event.add("description", "\n".join(details))
        event.add("status", "CONFIRMED" if status == "confirmed" else "TENTATIVE")
        calendar.add_component(event)
    if rows:
        calendar.add_missing_timezones(
            first_date=today - timedelta(days=1),
            last_date=today + timedelta(days=FEED_DAYS_AHEAD + 1),
        )
    return Feed(
        user=user,
        organization_id=org.id,
        patient_ids=sorted(set(patient_ids)),
        body=calendar.to_ical(),
    )
