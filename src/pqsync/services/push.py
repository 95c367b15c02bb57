"""Our bookings to IntakeQ: book, cancel and reschedule through pqsync.

A request is stored first (`push_requests`), then sent by whoever claims it (a conditional
UPDATE, so one sender at a time). IntakeQ's Id is stored with our appointment (a re-fetch by
id writes it the way a sync does), so the pull updates it and never duplicates it. A send
whose answer was lost (timeout, dropped connection, 5xx) is retried from the queue; a
retried booking first looks for the appointment the lost call may have made, so IntakeQ
never gets a second one. IntakeQ refusing the request (4xx) fails it, in words, for good.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, or_, select, update
from sqlalchemy.orm import Session

from pqsync.db.tables import Appointment as AppointmentRow
from pqsync.db.tables import Patient, PushRequest
from pqsync.intakeq.client import IntakeQClient
from pqsync.intakeq.errors import BudgetExhausted, IntakeQError, IntakeQRequestError
from pqsync.intakeq.models import AppointmentQuery
from pqsync.logging import get_logger
from pqsync.services.sync import Actor, SyncService
from pqsync.services.sync.locks import SyncInProgress
from pqsync.services.sync.results import SyncInputError

log = get_logger("pqsync.push")

KINDS = ("book", "cancel", "reschedule")
PENDING, SENDING, DONE, FAILED = "pending", "sending", "done", "failed"
# A claim older than this belonged to a sender that died: the request may be claimed again.
CLAIM_LEASE = timedelta(minutes=2)
BOOKABLE = ("Confirmed", "WaitingConfirmation")
CLI = Actor("cli")


class PushInputError(ValueError):
    """A request pqsync refuses before sending anything (the words say why)."""


@dataclass(frozen=True)
class PushOutcome:
    push_id: uuid.UUID
    kind: str
    status: str  # pending (will be retried) | sending | done | failed
    intakeq_appointment_id: str | None
    attempts: int
    error: str | None

    @property
    def retry(self) -> bool:
        return self.status == PENDING


def _ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise PushInputError("the start time needs its time zone offset")
    return int(moment.timestamp() * 1000)


class PushService:
    def __init__(
        self,
        engine: Engine,
        intakeq: Callable[[], IntakeQClient],
        sync_service: Callable[[], SyncService],
        clock: Callable[[], datetime],
        practice_zone: ZoneInfo,
    ) -> None:
        self.engine = engine
        self.intakeq = intakeq
        self.sync_service = sync_service
        self.clock = clock
        self.practice_zone = practice_zone

    # -- recording a request ----------------------------------------------------------------

    def request_booking(
        self,
        patient_id: uuid.UUID,
        start: datetime,
        *,
        practitioner_id: str,
        service_id: str,
        location_id: str,
        status: str = "Confirmed",
        requested_by: str,
    ) -> uuid.UUID:
        """Store a booking for the patient (their IntakeQ ClientId must be known)."""
        if status not in BOOKABLE:
            raise PushInputError("status must be Confirmed or WaitingConfirmation")
        with Session(self.engine) as session:
            patient = session.get(Patient, patient_id)
            if patient is None:
                raise PushInputError("no such patient")
            if patient.intakeq_client_id is None:
                raise PushInputError(
                    "the patient's IntakeQ client is not known yet: sync the patient first"
                )
            body = {
                "ClientId": int(patient.intakeq_client_id),
                "PractitionerId": practitioner_id,
                "ServiceId": service_id,
                "LocationId": location_id,
                "Status": status,
                "UtcDateTime": _ms(start),
                "SendClientEmailNotification": False,
            }
            return self._store(session, "book", patient_id, None, body, requested_by)

    def request_change(
        self,
        kind: str,
        intakeq_appointment_id: str,
        *,
        start: datetime | None = None,
        reason: str | None = None,
        requested_by: str,
    ) -> uuid.UUID:
        """Store a cancellation or a reschedule of an appointment we store."""
        if kind not in ("cancel", "reschedule"):
            raise PushInputError("kind must be cancel or reschedule")
        with Session(self.engine) as session:
            patient_id = session.scalar(
                select(AppointmentRow.patient_id).where(
                    AppointmentRow.pq_appointment_id == intakeq_appointment_id,
                    AppointmentRow.deleted_at.is_(None),
                )
            )
            if patient_id is None:
                raise PushInputError("no such appointment")
            if kind == "reschedule":
                if start is None:
                    raise PushInputError("a reschedule needs the new start time")
                body: dict[str, Any] = {"UtcDateTime": _ms(start)}
            else:
                body = {"Reason": (reason or "Cancelled through pqsync")[:500]}
            return self._store(
                session, kind, patient_id, intakeq_appointment_id, body, requested_by
            )

    def _store(
        self,
        session: Session,
        kind: str,
        patient_id: uuid.UUID,
        intakeq_id: str | None,
        body: dict[str, Any],
        requested_by: str,
    ) -> uuid.UUID:
        now = self.clock()
        row = PushRequest(
            kind=kind,
            patient_id=patient_id,
            intakeq_appointment_id=intakeq_id,
            body=body,
            status=PENDING,
            attempts=0,
            requested_by=requested_by[:200],
            created_at=now,
            updated_at=now,
        )
        session.add(row)
        session.commit()
        log.info("push.requested", push_id=str(row.id), kind=kind)
        return row.id

    # -- sending ----------------------------------------------------------------------------

    def outcome(self, push_id: uuid.UUID) -> PushOutcome | None:
        with Session(self.engine) as session:
            row = session.get(PushRequest, push_id)
            if row is None:
                return None
            return PushOutcome(
                row.id, row.kind, row.status, row.intakeq_appointment_id, row.attempts, row.error
            )

    def unfinished(self, limit: int = 20) -> list[tuple[datetime, PushOutcome]]:
        """Pushes not done (waiting to be tried again, being sent, failed), newest first,
        with when each was asked for: the staff page lists them."""
        with Session(self.engine) as session:
            rows = session.scalars(
                select(PushRequest)
                .where(PushRequest.status != DONE)
                .order_by(PushRequest.created_at.desc())
                .limit(limit)
            )
            return [
                (
                    row.created_at,
                    PushOutcome(
                        row.id,
                        row.kind,
                        row.status,
                        row.intakeq_appointment_id,
                        row.attempts,
                        row.error,
                    ),
                )
                for row in rows
            ]

    def waiting(self) -> list[uuid.UUID]:
        """Requests to (re)send: pending, or claimed by a sender that died."""
        stale = self.clock() - CLAIM_LEASE
        with Session(self.engine) as session:
            return list(
                session.scalars(
                    select(PushRequest.id).where(
                        or_(
                            PushRequest.status == PENDING,
                            (PushRequest.status == SENDING) & (PushRequest.claimed_at < stale),
                        )
                    )
                )
            )

    def send(self, push_id: uuid.UUID, actor: Actor = CLI) -> PushOutcome | None:
        """Claim the request and send it; when another sender has it or it is over, its
        state as it is (None: no such request)."""
        attempts = self._claim(push_id)
        if attempts is None:
            return self.outcome(push_id)
        with Session(self.engine) as session:
            row = session.get(PushRequest, push_id)
            assert row is not None
            kind, body, target = row.kind, dict(row.body), row.intakeq_appointment_id
            patient_id = row.patient_id
        client = self.intakeq()
        try:
            if kind == "book":
                found = self._booked_earlier(client, patient_id, body) if attempts > 1 else None
                target = found or client.create_appointment(**body).id
            elif kind == "reschedule" and target is not None:
                client.update_appointment(target, UtcDateTime=body["UtcDateTime"])
            elif kind == "cancel" and target is not None:
                client.cancel_appointment(target, str(body.get("Reason") or ""))
        except IntakeQRequestError as exc:
            return self._finish(push_id, FAILED, target, f"IntakeQ refused it: {exc}")
        except (IntakeQError, BudgetExhausted) as exc:
            log.info("push.retry", push_id=str(push_id), reason=type(exc).__name__)
            return self._finish(
                push_id, PENDING, target, "IntakeQ did not answer; it is tried again"
            )
        outcome = self._finish(push_id, DONE, target, None)
        self._store_locally(target, patient_id, actor)
        return outcome

    def _claim(self, push_id: uuid.UUID) -> int | None:
        now = self.clock()
        with self.engine.begin() as conn:
            claimed = conn.execute(
                update(PushRequest)
                .where(
                    PushRequest.id == push_id,
                    or_(
                        PushRequest.status == PENDING,
                        (PushRequest.status == SENDING)
                        & (PushRequest.claimed_at < now - CLAIM_LEASE),
                    ),
                )
                .values(
                    status=SENDING,
                    claimed_at=now,
                    updated_at=now,
                    attempts=PushRequest.attempts + 1,
                )
            )
            if claimed.rowcount != 1:
                return None
            attempts = conn.scalar(select(PushRequest.attempts).where(PushRequest.id == push_id))
        return int(attempts or 0)

    def _finish(
        self, push_id: uuid.UUID, status: str, target: str | None, error: str | None
    ) -> PushOutcome:
        with self.engine.begin() as conn:
            conn.execute(
                update(PushRequest)
                .where(PushRequest.id == push_id)
                .values(
                    status=status,
                    intakeq_appointment_id=target,
                    error=error,
                    updated_at=self.clock(),
                )
            )
        outcome = self.outcome(push_id)
        assert outcome is not None
        log.info("push.finished", push_id=str(push_id), status=status)
        return outcome

    def _booked_earlier(
        self, client: IntakeQClient, patient_id: uuid.UUID | None, body: dict[str, Any]
    ) -> str | None:
        """The appointment an earlier try may have made although its answer was lost: the
        patient's, at the same start, with the same practitioner and service."""
        with Session(self.engine) as session:
            patient = session.get(Patient, patient_id) if patient_id else None
            email = patient.email if patient is not None else None
        if not email:
            return None
        start_ms = int(body["UtcDateTime"])
        day = datetime.fromtimestamp(start_ms / 1000, self.practice_zone).date()
        query = AppointmentQuery(client=email, start_date=day, end_date=day)
        for page in client.appointment_pages(query):
            for found in page:
                if isinstance(found, Exception):
                    continue
                if (
                    found.client_id == body["ClientId"]
                    and int(found.start.timestamp() * 1000) == start_ms
                    and found.practitioner_id == body["PractitionerId"]
                    and found.service_id == body["ServiceId"]
                ):
                    return found.id
        return None

    def _store_locally(
        self, intakeq_id: str | None, patient_id: uuid.UUID | None, actor: Actor
    ) -> None:
        """Write IntakeQ's version with its Id into our rows now (as a sync would); when
        that cannot run now, the next pull stores it (by the same Id, never twice)."""
        if intakeq_id is None:
            return
        service = self.sync_service()
        try:
            prepared = service.prepare_appointment(intakeq_id, patient_hint=patient_id, actor=actor)
        except (SyncInProgress, SyncInputError) as exc:
            log.info("push.store_later", reason=type(exc).__name__)
            return
        service.run(prepared)
