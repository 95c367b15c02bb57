"""What a webhook may start: events naming another practice are ignored; events for a client
(or appointment) whose re-fetch is still waiting join it; webhook work may take at most a
share of the day's IntakeQ requests. Every event's fate is recorded (ids only) and counted."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, func, insert, select
from sqlalchemy.orm import Session

from pqsync.db.tables import Patient, SyncLog, WebhookEvent

DAY = timedelta(days=1)
QUEUED = "queued"
COALESCED = "coalesced"
LIMITED = "limited"
FOREIGN = "foreign"
IGNORED = "ignored"  # names no client or appointment of ours
OUTCOMES = (QUEUED, COALESCED, LIMITED, FOREIGN, IGNORED)


@dataclass(frozen=True)
class Admission:
    outcome: str
    key: str
    received_at: datetime
    delay_seconds: float = 0.0

    @property
    def start_job(self) -> bool:
        return self.outcome == QUEUED


def coalesce_key(patient_id: uuid.UUID | None, appointment_id: str | None) -> str:
    """One re-fetch per known client; per appointment when the client is not ours (yet)."""
    if patient_id is not None:
        return f"patient:{patient_id}"
    return f"appointment:{appointment_id}"


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
        with self.engine.begin() as conn:
            if self.practice_id and str(practice_id) != self.practice_id:
                outcome = FOREIGN
            elif patient_id is None and appointment_id is None:
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

    @staticmethod
    def _spent_today(conn: Connection, now: datetime) -> int:
        """Requests webhook runs made in the last 24 hours, or the re-fetches queued (each at
        least one request), whichever is more."""
        since = now - DAY
        requests = conn.scalar(
            select(func.coalesce(func.sum(SyncLog.requests_made), 0)).where(
                SyncLog.run_type == "webhook", SyncLog.started_at > since
            )
        )
        queued = conn.scalar(
            select(func.count()).where(
                WebhookEvent.outcome == QUEUED, WebhookEvent.received_at > since
            )
        )
        return max(int(requests or 0), int(queued or 0))

    def appointments_since(self, key: str, since: datetime) -> set[str | None]:
        """The appointment ids the events of `key` named since `since` (None: no id)."""
        with self.engine.connect() as conn:
            rows = conn.scalars(
                select(WebhookEvent.appointment_id).where(
                    WebhookEvent.coalesce_key == key,
                    WebhookEvent.outcome.in_((QUEUED, COALESCED)),
                    WebhookEvent.received_at >= since,
                )
            )
            return set(rows)

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
