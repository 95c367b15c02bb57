"""Failure alerts: one mail when a kind of run starts failing, one when it recovers, one
when a nightly run did not happen. Without SMTP the alert is logged and kept for the staff
page. Mail names the organisation, counts and the error in plain words, never a patient."""

from __future__ import annotations

import smtplib
import ssl
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from email.message import EmailMessage
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pqsync.db.tables import Alert, AlertStreak, Organization, SyncLog
from pqsync.domain.run_types import run_type
from pqsync.logging import get_logger

log = get_logger("pqsync.alerts")

WHAT = {
    "automated_daily": "The nightly sync",
    "manual_org": "A sync of all of an organisation's patients",
    "manual_patient": "A sync of one patient",
    "webhook": "A sync started by an IntakeQ webhook",
}
PLAIN_ERRORS = {
    "unreachable": "IntakeQ could not be reached (the network or IntakeQ is down).",
    "auth": "IntakeQ refused the clinic's API key; the key has to be renewed.",
    "intakeq": "IntakeQ answered with errors.",
    "internal": "pqsync failed on its side; the server log has the details.",
    "worker_stopped": "The worker carrying the run stopped (crashed or was killed) before "
    "it finished.",
}
FAILED = "failed"


# The streak of nightly runs that could not start (configuration, IntakeQ key).
NIGHTLY_START_KEY = "nightly:cannot-start"


class Mailer(Protocol):
    def send(self, recipients: list[str], subject: str, body: str) -> None: ...


class SmtpError(ValueError):
    """PQSYNC_SMTP_URL cannot be used; the message says why (never the password)."""


@dataclass(frozen=True)
class SmtpMailer:
    """Mail over SMTP from a URL: `smtp://[user:password@]host[:port][?starttls=true&from=a@b]`,
    `smtps://` for TLS from the start; login when the URL has a user."""

    host: str
    port: int
    sender: str
    starttls: bool = False
    tls: bool = False
    user: str | None = None
    password: str | None = None
    timeout: float = 30.0

    @classmethod
    def from_url(cls, url: str) -> SmtpMailer:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise SmtpError("PQSYNC_SMTP_URL must look like smtp://[user:password@]host[:port]")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        tls = parts.scheme == "smtps"
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if tls else 25),
            sender=query.get("from", f"pqsync@{parts.hostname}"),
            starttls=query.get("starttls", "").lower() in ("1", "true", "yes"),
            tls=tls,
            user=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    def send(self, recipients: list[str], subject: str, body: str) -> None:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = ", ".join(recipients)
        message["Subject"] = subject
        message.set_content(body)
        context = ssl.create_default_context()
        smtp: smtplib.SMTP = (
            smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
            if self.tls
            else smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        )
        with smtp:
            if self.starttls:
                smtp.starttls(context=context)
            if self.user is not None:
                smtp.login(self.user, self.password or "")
            smtp.send_message(message)


@dataclass(frozen=True)
class RunFacts:
    run_id: uuid.UUID
    run_type: str
    status: str
    organization_id: uuid.UUID | None
    organization_name: str | None
    patients: int
    error_kind: str | None
    started_at: datetime


class Alerts:
    """Decides and delivers alerts; every alert is a row in `alerts` (the staff page)."""

    def __init__(
        self,
        engine: Engine,
        clock: Callable[[], datetime],
        *,
        mailer: Mailer | None,
        recipients: list[str],
        base_url: str,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.mailer = mailer
        self.recipients = recipients
        self.base_url = base_url.rstrip("/")

    def run_finished(self, run_id: uuid.UUID) -> None:
        """Look at a finished run: open a failure streak (one mail), or close one (one mail).
        A paused run (the day's budget) is neither."""
        facts = self._facts(run_id)
        if facts is None or facts.status in ("running", "paused"):
            return
        if facts.status == FAILED and facts.error_kind == "budget":
            return
        key = f"{facts.run_type}:{facts.organization_id or 'all'}"
        if facts.status == FAILED:
            if self._flip(key, failing=True):
                self._deliver(key, "failure", *self._failure_mail(facts), facts)
        elif self._flip(key, failing=False):
            self._deliver(key, "recovery", *self._recovery_mail(facts), facts)

    def nightly_missed(self, organization_id: uuid.UUID, name: str, day: date) -> None:
        """A nightly run that had not started by 06:00 local: one alert per organisation and day."""
        key = f"missed:{organization_id}:{day.isoformat()}"
        if not self._flip(key, failing=True):
            return
        subject = f"pqsync: the nightly sync did not run for {name} on {day.isoformat()}"
        body = (
            f"The nightly sync of {name} for {day.isoformat()} had not started by 06:00 "
            "in the organisation's time zone: no pqsync worker was running.\n"
            "A worker that comes back runs it once (catch-up); check that `pqsync worker` "
            f"is running.\n\nHealth: {self.base_url}/healthz\n"
        )
        self._deliver(key, "missed", subject, body, None, organization_id)

    def nightly_cannot_start(self, reason: str) -> None:
        """A due nightly run could not even start (its claim given back, retried next
        minute): one alert until a night starts again. `reason` names no secret."""
        if not self._flip(NIGHTLY_START_KEY, failing=True):
            return
        subject = "pqsync: the nightly sync cannot start"
        body = (
            f"A nightly sync was due but could not start: {reason}.\n"
            "No run was recorded; the worker tries again every minute and the night is run "
            "once this is fixed.\n\n"
            f"Health: {self.base_url}/healthz\n"
        )
        self._deliver(NIGHTLY_START_KEY, "failure", subject, body, None)

    def nightly_could_start(self) -> None:
        """A nightly run started: close the cannot-start streak (the run's own alerts say
        how it went)."""
        self._flip(NIGHTLY_START_KEY, failing=False)

    # -- internals -----------------------------------------------------------------------

    def _facts(self, run_id: uuid.UUID) -> RunFacts | None:
        with Session(self.engine) as session:
            row = session.get(SyncLog, run_id)
            if row is None:
                return None
            org_name = (
                session.scalar(
                    select(Organization.name).where(Organization.id == row.organization_id)
                )
                if row.organization_id
                else None
            )
            details = row.details or {}
            return RunFacts(
                run_id=row.id,
                run_type=row.run_type or run_type(row.sync_type, row.triggered_by),
                status=row.status,
                organization_id=row.organization_id,
                organization_name=org_name,
                patients=int(details.get("patients_total") or 0),
                error_kind=details.get("error_kind"),
                started_at=row.started_at,
            )

    def _flip(self, key: str, *, failing: bool) -> bool:
        """Set the streak's state; True only for the caller that changed it (a new streak
        opened, or an open one closed)."""
        now = self.clock()
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(AlertStreak)
                .where(AlertStreak.key == key, AlertStreak.failing.is_(not failing))
                .values(failing=failing, failures=1 if failing else 0, changed_at=now)
            ).rowcount
            if changed:
                return True
            if failing:
                conn.execute(
                    update(AlertStreak)
                    .where(AlertStreak.key == key)
                    .values(failures=AlertStreak.failures + 1)
                )
        if not failing:
            return False
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(AlertStreak).values(key=key, failing=True, failures=1, changed_at=now)
                )
        except IntegrityError:
            return False  # the streak is already open (or another worker just opened it)
        return True

    def _where(self, facts: RunFacts) -> str:
        return facts.organization_name or "all organisations"

    def _failure_mail(self, facts: RunFacts) -> tuple[str, str]:
        what = WHAT.get(facts.run_type, "A sync")
        plain = PLAIN_ERRORS.get(facts.error_kind or "", "The run failed.")
        subject = f"pqsync: {what.lower()} failed ({self._where(facts)})"
        body = (
            f"{what} failed.\n\n"
            f"Organisation: {self._where(facts)}\n"
            f"Patients in the run: {facts.patients}\n"
            f"Started: {facts.started_at.isoformat(timespec='seconds')}\n"
            f"What went wrong: {plain}\n\n"
            f"The run: {self.base_url}/api/partner-dashboard/sync-runs/{facts.run_id}\n\n"
            "You get one mail per streak of failures, and one when it works again.\n"
        )
        return subject, body

    def _recovery_mail(self, facts: RunFacts) -> tuple[str, str]:
        what = WHAT.get(facts.run_type, "A sync")
        subject = f"pqsync: {what.lower()} works again ({self._where(facts)})"
        body = (
            f"{what} succeeded again after failing.\n\n"
            f"Organisation: {self._where(facts)}\n"
            f"Patients in the run: {facts.patients}\n\n"
            f"The run: {self.base_url}/api/partner-dashboard/sync-runs/{facts.run_id}\n"
        )
        return subject, body

    def _deliver(
        self,
        key: str,
        kind: str,
        subject: str,
        body: str,
        facts: RunFacts | None,
        organization_id: uuid.UUID | None = None,
    ) -> None:
        delivery = "log"
        if self.mailer is not None and self.recipients:
            try:
                self.mailer.send(self.recipients, subject, body)
                delivery = "email"
            except (OSError, smtplib.SMTPException) as exc:
                delivery = "failed"
                log.error("alert.mail_failed", kind=kind, error=type(exc).__name__)
        with self.engine.begin() as conn:
            conn.execute(
                insert(Alert).values(
                    id=uuid.uuid4(),
                    key=key,
                    kind=kind,
                    subject=subject,
                    body=body,
                    organization_id=facts.organization_id if facts else organization_id,
                    run_id=facts.run_id if facts else None,
                    delivery=delivery,
                    created_at=self.clock(),
                )
            )
        log.warning("alert.raised", kind=kind, key=key, delivery=delivery, subject=subject)
