"""What a webhook may start: events naming another practice, or nothing of ours, are ignored
(they cost database lookups only, never IntakeQ requests); events for a patient whose
re-fetch is still waiting join it; webhook work may take at most a share of the day's
IntakeQ requests, charged for the requests its runs made (plus one reserved per re-fetch
still waiting). Every event is stored, ids only, before the webhook is answered; a queued or
coalesced one stays pending until a re-fetch that started after it has run. A re-fetch that
fails leaves it pending, tried again with a growing delay, and after REFETCH_TRIES failures
it is `failed`: on the staff page and in the metrics, for the nightly run to bring."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, func, insert, or_, select, update
from sqlalchemy.orm import Session

from pqsync.db.engine import write_connection
from pqsync.db.tables import Appointment, Patient, SyncLog, WebhookEvent

DAY = timedelta(days=1)
QUEUED = "queued"
COALESCED = "coalesced"
LIMITED = "limited"
FOREIGN = "foreign"
IGNORED = "ignored"  # names no client, appointment or email of ours
FAILED = "failed"  # its re-fetch failed REFETCH_TRIES times: given up, shown to staff
OUTCOMES = (QUEUED, COALESCED, LIMITED, FOREIGN, IGNORED, FAILED)
PENDING = (QUEUED, COALESCED)  # processed by a re-fetch
# A re-fetch that fails (IntakeQ down, 500s, timeouts after the client's own retries) leaves
# its events pending; the tick tries again after 1, 2, 4, 8 and 16 minutes, and after the
# sixth failure gives up: the events are `failed`, on the staff page, for the nightly run.
REFETCH_TRIES = 6
FIRST_RETRY = timedelta(minutes=1)


def retry_delay(attempts: int) -> timedelta:
    """How long after its `attempts`-th failed re-fetch an event is tried again."""
    return FIRST_RETRY * (1 << max(0, attempts - 1))


@dataclass(frozen=True)
class Admission:
    outcome: str
    key: str
    received_at: datetime
    delay_seconds: float = 0.0

    @property
    def start_job(self) -> bool:
        return self.outcome == QUEUED


@dataclass(frozen=True)
class WebhookBudget:
    """Webhook work's share of the last 24 hours' IntakeQ requests, for the staff page."""

    ceiling: int
    spent: int  # requests webhook runs made
    reserved: int  # re-fetches waiting, one request each at least
    pending_events: int
    counts: dict[str, int]
    retrying: int = 0  # pending events whose re-fetch failed, to be tried again
    given_up: int = 0  # events of the last 24 hours whose re-fetch failed every try

    @property
    def left(self) -> int:
        return max(0, self.ceiling - self.spent - self.reserved)


def coalesce_key(patient_id: uuid.UUID | None, appointment_id: str | None) -> str:
    """One re-fetch per known client; per appointment when the client is not ours (yet)."""
    if patient_id is not None:
        return f"patient:{patient_id}"
    return f"appointment:{appointment_id}"


def patient_of_key(key: str) -> uuid.UUID | None:
    kind, _, ref = key.partition(":")
    if kind != "patient":
        return None
    try:
        return uuid.UUID(ref)
    except ValueError:
        return None


class WebhookGate:
    def __init__(
        self,
        engine: Engine,
        clock: Callable[[], datetime],
        *,
        practice_id: str | None,
        daily_limit: int,
        budget_share: float,
        coalesce_for: timedelta,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.practice_id = practice_id
        self.ceiling = int(daily_limit * budget_share)
        self.coalesce_for = coalesce_for

    def admit(
        self,
        practice_id: str | int | None,
        patient_id: uuid.UUID | None,
        appointment_id: str | None,
    ) -> Admission:
        """Decide and record an event's fate; `start_job` says whether to queue a re-fetch,
        after `delay_seconds` (so that a burst for one client becomes one re-fetch)."""
        now = self.clock()
        key = coalesce_key(patient_id, appointment_id)
        # Read then write: on SQLite the write lock is taken up front, so a busy database
        # makes the webhook wait (busy timeout) instead of failing it.
        with write_connection(self.engine) as conn, conn.begin():
            if self.practice_id and str(practice_id) != self.practice_id:
                outcome = FOREIGN
            elif patient_id is None:
                # Names nothing of ours (its lookups were the database's): free, and never
                # a share of the budget that real events need. A real appointment of a
                # client we do not know yet arrives with the nightly run.
                outcome = IGNORED
            elif conn.scalar(
                select(func.count()).where(
                    WebhookEvent.coalesce_key == key,
                    WebhookEvent.outcome == QUEUED,
                    WebhookEvent.runs_at > now,
                )
            ):
                outcome = COALESCED
            elif self._spent_today(conn, now) >= self.ceiling:
                outcome = LIMITED
            else:
                outcome = QUEUED
            conn.execute(
                insert(WebhookEvent).values(
                    coalesce_key=key,
                    outcome=outcome,
                    appointment_id=appointment_id,
                    received_at=now,
                    runs_at=now + self.coalesce_for if outcome == QUEUED else None,
                )
            )
        return Admission(outcome, key, now, self.coalesce_for.total_seconds())

    @classmethod
    def _spent_today(cls, conn: Connection, now: datetime) -> int:
        """Requests webhook runs made in the last 24 hours, plus one for each re-fetch still
        waiting (it makes at least one)."""
        spent, reserved = cls._usage(conn, now)
        return spent + reserved

    @staticmethod
    def _usage(conn: Connection, now: datetime) -> tuple[int, int]:
        since = now - DAY
        requests = conn.scalar(
            select(func.coalesce(func.sum(SyncLog.requests_made), 0)).where(
                SyncLog.run_type == "webhook", SyncLog.started_at > since
            )
        )
        waiting = conn.scalar(
            select(func.count(func.distinct(WebhookEvent.coalesce_key))).where(
                WebhookEvent.outcome == QUEUED,
                WebhookEvent.processed_at.is_(None),
                WebhookEvent.received_at > since,
            )
        )
        return int(requests or 0), int(waiting or 0)

    def pending_appointments(self, key: str) -> set[str | None]:
        """The appointment ids the unprocessed events of `key` name (None: no id); empty
        when a re-fetch has already dealt with them."""
        with self.engine.connect() as conn:
            rows = conn.scalars(
                select(WebhookEvent.appointment_id).where(
                    WebhookEvent.coalesce_key == key,
                    WebhookEvent.outcome.in_(PENDING),
                    WebhookEvent.processed_at.is_(None),
                )
            )
            return set(rows)

    def mark_processed(self, key: str, received_by: datetime) -> None:
        """The events of `key` received by `received_by` are dealt with (a re-fetch that
        started after them has finished)."""
        with self.engine.begin() as conn:
            conn.execute(
                update(WebhookEvent)
                .where(
                    WebhookEvent.coalesce_key == key,
                    WebhookEvent.outcome.in_(PENDING),
                    WebhookEvent.processed_at.is_(None),
                    WebhookEvent.received_at <= received_by,
                )
                .values(processed_at=self.clock())
            )

    def record_failure(self, key: str, received_by: datetime, reason: str) -> int:
        """The re-fetch of `key` that started at `received_by` failed: its events stay
        pending, to be tried again after `retry_delay`; after REFETCH_TRIES failures they
        are given up (`failed`). Returns how many were given up."""
        now = self.clock()
        pending = (
            WebhookEvent.coalesce_key == key,
            WebhookEvent.outcome.in_(PENDING),
            WebhookEvent.processed_at.is_(None),
            WebhookEvent.received_at <= received_by,
        )
        with self.engine.begin() as conn:
            rows = conn.execute(select(WebhookEvent.id, WebhookEvent.attempts).where(*pending))
            given_up = 0
            for event_id, attempts in rows.all():
                tries = int(attempts or 0) + 1
                values: dict[str, object] = {
                    "attempts": tries,
                    "last_error": reason[:200],
                    "retry_at": now + retry_delay(tries),
                }
                if tries >= REFETCH_TRIES:
                    values.update(outcome=FAILED, retry_at=None)
                    given_up += 1
                conn.execute(
                    update(WebhookEvent).where(WebhookEvent.id == event_id).values(**values)
                )
        return given_up

    def overdue_keys(self, grace: timedelta) -> list[str]:
        """Keys whose pending events should have been processed by now (their re-fetch was
        lost with a process, never queued, or failed and is due again): the worker queues
        them again."""
        now = self.clock()
        due_by = now - self.coalesce_for - grace
        with self.engine.connect() as conn:
            return list(
                conn.scalars(
                    select(WebhookEvent.coalesce_key)
                    .where(
                        WebhookEvent.outcome.in_(PENDING),
                        WebhookEvent.processed_at.is_(None),
                        WebhookEvent.received_at <= due_by,
                        or_(WebhookEvent.retry_at.is_(None), WebhookEvent.retry_at <= now),
                    )
                    .distinct()
                )
            )

    def budget(self) -> WebhookBudget:
        """What the staff page shows of webhook work's share of the day."""
        now = self.clock()
        with self.engine.connect() as conn:
            spent, reserved = self._usage(conn, now)
            pending = conn.scalar(
                select(func.count()).where(
                    WebhookEvent.outcome.in_(PENDING), WebhookEvent.processed_at.is_(None)
                )
            )
            retrying = conn.scalar(
                select(func.count()).where(
                    WebhookEvent.outcome.in_(PENDING),
                    WebhookEvent.processed_at.is_(None),
                    WebhookEvent.attempts > 0,
                )
            )
            given_up = conn.scalar(
                select(func.count()).where(
                    WebhookEvent.outcome == FAILED, WebhookEvent.received_at > now - DAY
                )
            )
        return WebhookBudget(
            self.ceiling,
            spent,
            reserved,
            int(pending or 0),
            self.counts_today(),
            retrying=int(retrying or 0),
            given_up=int(given_up or 0),
        )

    def counts_today(self) -> dict[str, int]:
        since = self.clock() - DAY
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(WebhookEvent.outcome, func.count())
                .where(WebhookEvent.received_at > since)
                .group_by(WebhookEvent.outcome)
            )
            found = {outcome: int(count) for outcome, count in rows}
        return {outcome: found.get(outcome, 0) for outcome in OUTCOMES}


def patient_for_client(session: Session, client_id: int | None) -> uuid.UUID | None:
    """The patient an event's IntakeQ ClientId belongs to, if it is one of ours."""
    if client_id is None:
        return None
    return session.scalar(select(Patient.id).where(Patient.intakeq_client_id == client_id))


def patient_for_event(
    session: Session, client_id: int | None, appointment_id: str | None, email: str | None
) -> uuid.UUID | None:
    """The patient an event is about: by ClientId, else by the appointment we store, else by
    the client's email (a patient whose ClientId is not learned yet). At most three indexed
    lookups in our database, never an IntakeQ request; None when it names nothing of ours."""
    found = patient_for_client(session, client_id)
    if found is None and appointment_id:
        found = session.scalar(
            select(Appointment.patient_id).where(Appointment.pq_appointment_id == appointment_id)
        )
    if found is None and email and len(email) <= 320:
        found = session.scalar(
            select(Patient.id).where(
                Patient.email == email.strip().lower(), Patient.intakeq_client_id.is_(None)
            )
        )
    return found
