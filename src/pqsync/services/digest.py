"""The daily digest: one mail a morning to each case manager or partner admin who opted in,
saying how many missed appointments (and late cancellations) of their organisation's
consenting residents wait in 'Needs attention', with a link to the roster. The mail holds a
count and a link only: no names, emails or appointment details (mail leaves pqsync's care).

Sent from the worker's minute tick at or after DIGEST_HOUR in the organisation's zone, once
per user and local day however many workers tick (a conditional UPDATE claims the day). No
mail on a morning with nothing to report, and none without PQSYNC_SMTP_URL.
"""

from __future__ import annotations

import smtplib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, or_, select, update
from sqlalchemy.orm import Session

from pqsync.db.tables import CaseworkPreferences, Organization, PartnerUser
from pqsync.logging import get_logger
from pqsync.services import casework
from pqsync.services.alerts import Mailer
from pqsync.services.auth import Principal

log = get_logger("pqsync.digest")

DIGEST_HOUR = 7
DIGEST_ROLES = ("case_manager", "partner_admin")


@dataclass(frozen=True)
class DigestResult:
    sent: int
    nothing_to_say: int
    failed: int


def set_opt_in(session: Session, user_id: uuid.UUID, opted_in: bool) -> None:
    prefs = session.get(CaseworkPreferences, user_id)
    if prefs is None:
        session.add(CaseworkPreferences(user_id=user_id, digest_opt_in=opted_in))
    else:
        prefs.digest_opt_in = opted_in
    session.commit()


def opted_in(session: Session, user_id: uuid.UUID) -> bool:
    prefs = session.get(CaseworkPreferences, user_id)
    return bool(prefs and prefs.digest_opt_in)


def digest_text(missed: int, late: int, base_url: str) -> tuple[str, str]:
    """The subject and body: counts and a link, nothing about anyone."""
    parts = []
    if missed:
        parts.append(f"{missed} missed appointment{'' if missed == 1 else 's'}")
    if late:
        parts.append(f"{late} late cancellation{'' if late == 1 else 's'}")
    verb = "needs" if missed + late == 1 else "need"
    subject = f"{' and '.join(parts)} {verb} your attention"
    body = (
        f"{subject}.\n\n"
        f"See them under 'Needs attention' on your dashboard: {base_url.rstrip('/')}/#attention\n\n"
        "You get this mail because you asked for a daily digest; turn it off on the "
        f"calendar and mail page: {base_url.rstrip('/')}/calendar\n"
    )
    return subject, body


def send_digests(
    engine: Engine, clock: Callable[[], datetime], mailer: Mailer | None, base_url: str
) -> DigestResult:
    """Send today's digests that are due (see the module's docstring)."""
    if mailer is None:
        return DigestResult(0, 0, 0)
    now = clock()
    sent = quiet = failed = 0
    with Session(engine, expire_on_commit=False) as session:
        candidates = session.execute(
            select(PartnerUser, Organization)
            .join(CaseworkPreferences, CaseworkPreferences.user_id == PartnerUser.id)
            .join(Organization, Organization.id == PartnerUser.organization_id)
            .where(
                CaseworkPreferences.digest_opt_in.is_(True),
                PartnerUser.is_active.is_(True),
                PartnerUser.role.in_(DIGEST_ROLES),
            )
            .order_by(PartnerUser.id)
        ).all()
        for user, org in candidates:
            local = now.astimezone(casework.org_zone(org))
            if local.hour < DIGEST_HOUR:
                continue
            today = local.date()
            claimed = session.execute(
                update(CaseworkPreferences)
                .where(
                    CaseworkPreferences.user_id == user.id,
                    or_(
                        CaseworkPreferences.digest_sent_on.is_(None),
                        CaseworkPreferences.digest_sent_on < today,
                    ),
                )
                .values(digest_sent_on=today)
            )
            session.commit()
            if not getattr(claimed, "rowcount", 0):
                continue  # another worker has it, or it went out today
            viewer = Principal(
                user_id=user.id,
                email=user.email,
                name=user.name,
                role=user.role,
                organization_id=org.id,
                organization_name=org.name,
                via="digest",
            )
            attention = casework.attention(session, viewer, org, now)
            group = next(g for g in attention.groups if g.name == "missed")
            missed, late = group.kinds["missed"], group.kinds["late_cancellation"]
            if missed + late == 0:
                quiet += 1
                continue
            subject, body = digest_text(missed, late, base_url)
            try:
                mailer.send([user.email], subject, body)
                sent += 1
            except (OSError, smtplib.SMTPException) as exc:
                failed += 1
                log.error("digest.mail_failed", error=type(exc).__name__)
                # Not sent: the next tick tries again.
                session.execute(
                    update(CaseworkPreferences)
                    .where(CaseworkPreferences.user_id == user.id)
                    .values(digest_sent_on=None)
                )
                session.commit()
    if sent or failed:
        log.info("digest.sent", sent=sent, failed=failed)
    return DigestResult(sent, quiet, failed)
