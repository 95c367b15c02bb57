"""Accuracy, measured by pqsync itself: what we store in the window against what IntakeQ
lists there, appointment by appointment.

A verification fetches the practice's window once (pages of 100, like a window sync) and
compares it with our live rows of the scope's patients:

- missing: IntakeQ lists it for one of the scope's patients, we do not show it;
- extra: we show it on a patient's page, IntakeQ does not list it in the window, or lists it
  under a client who is none of our patients;
- stale: both have it, some fields differ (each named, with both values, except free text).

It names appointments by IntakeQ id and patients by our id, never by name. It writes nothing
but its own record (`verifications`): it measures, the sync repairs. Whose appointment an
IntakeQ record is follows its own rule, written apart from the sync's: the patient whose
ClientId it carries; else the patient whose email it carries, when its ClientId is the only
IntakeQ client carrying that email (`GET /clients`, asked once per such email: a merged or
re-created profile); else nobody of ours (two clients on one email: neither is shown).
A verification therefore costs the window's pages plus one request per such email.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pqsync.db.lookup import organization_by_ref
from pqsync.db.tables import Affiliation, Organization, Patient, Verification
from pqsync.db.tables import Appointment as AppointmentRow
from pqsync.domain.diff import TRACKED_FIELDS, appointment_changes, jsonable
from pqsync.domain.schedule import VERIFY_AT, latest_weekly_day, local_instant
from pqsync.domain.windows import Window, default_window
from pqsync.intakeq.client import RequestTally
from pqsync.intakeq.errors import IntakeQError
from pqsync.intakeq.models import Appointment, AppointmentQuery, Client, MalformedRecord
from pqsync.logging import get_logger
from pqsync.services.alerts import Alerts
from pqsync.services.sync.context import Lookups
from pqsync.services.sync.identity import exact_carriers
from pqsync.services.sync.plan import PAGE_SIZE, Planner, bounded, page_limit
from pqsync.services.sync.writer import row_values

log = get_logger("pqsync.verify")

Record = Appointment | MalformedRecord
# The most discrepancies one verification keeps (the counts are always complete).
MAX_KEPT = 200
# Requests a verification leaves untouched in the day's budget, for the day's syncs.
KEEP_FOR_SYNCS = 100
# A scheduled verification the budget skipped is tried again after this long...
RETRY_SKIPPED_AFTER = timedelta(hours=1)
# ... until a day after its time; a week missed altogether waits for the next.
WEEKLY_DUE_FOR = timedelta(days=1)
# Fields whose values are shown; the others (free text IntakeQ sends) only by name.
VALUES_SHOWN = frozenset(
    {
        "patient_id",
        "status",
        "intakeq_status",
        "start_time",
        "end_time",
        "provider_id",
        "intakeq_practitioner_id",
        "service_id",
        "intakeq_client_id",
        "intakeq_last_modified",
        "deleted_at",
    }
)
COMPARED_FIELDS = tuple(name for name in TRACKED_FIELDS if name != "deleted_at")


class VerifyInputError(ValueError):
    """An organisation that does not exist (the message says which)."""


class VerificationSource(Protocol):
    """What a verification needs of the IntakeQ client."""

    def counting(self) -> AbstractContextManager[RequestTally]: ...

    def appointment_pages(self, query: AppointmentQuery) -> Generator[list[Record], None, None]: ...

    def clients(self, search: str | None = None) -> Iterator[Client]: ...


@dataclass(frozen=True)
class Discrepancy:
    """One appointment that differs: by IntakeQ id, with our patient id (never a name)."""

    appointment_id: str
    kind: str  # missing | extra | stale
    patient_id: uuid.UUID | None
    reason: str
    fields: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> stored, intakeq

    def as_json(self) -> dict[str, Any]:
        return {
            "appointmentId": self.appointment_id,
            "kind": self.kind,
            "patientId": str(self.patient_id) if self.patient_id else None,
            "reason": self.reason,
            "fields": self.fields,
        }


@dataclass
class VerificationResult:
    id: uuid.UUID
    scope: str  # all | organization
    organization_id: uuid.UUID | None
    organization_name: str | None
    window: Window
    started_at: datetime
    finished_at: datetime | None = None
    status: str = "running"  # accurate | discrepancies | failed | skipped
    compared: int = 0
    discrepancies: list[Discrepancy] = field(default_factory=list)
    requests_made: int = 0
    error: str | None = None
    # Records IntakeQ sent that could not be judged (unreadable, or an email two clients share).
    not_judged: int = 0

    def count(self, kind: str) -> int:
        return sum(1 for d in self.discrepancies if d.kind == kind)

    @property
    def accuracy(self) -> float | None:
        """Share of compared appointments that match, in percent (None: nothing measured)."""
        if self.status not in ("accurate", "discrepancies"):
            return None
        if self.compared == 0:
            return 100.0
        return 100.0 * (self.compared - len(self.discrepancies)) / self.compared

    def as_json(self) -> dict[str, Any]:
        return {
            "verificationId": str(self.id),
            "scope": self.scope,
            "organizationId": str(self.organization_id) if self.organization_id else None,
            "organizationName": self.organization_name,
            "dateRange": {
                "startDate": self.window.start.isoformat(),
                "endDate": self.window.end.isoformat(),
            },
            "status": self.status,
            "accuracyPercent": self.accuracy,
            "compared": self.compared,
            "missing": self.count("missing"),
            "extra": self.count("extra"),
            "stale": self.count("stale"),
            "notJudged": self.not_judged,
            "requestsMade": self.requests_made,
            "error": self.error,
            "discrepancies": [d.as_json() for d in self.discrepancies],
        }


@dataclass(frozen=True)
class _Scope:
    scope: str
    organization_id: uuid.UUID | None
    organization_name: str | None
    window: Window
    patients: list[tuple[uuid.UUID, str, int | None]]  # id, email, ClientId


class Verifier:
    """Compares the stored window with IntakeQ's for one organisation or all of them."""

    def __init__(
        self,
        engine: Engine,
        source: VerificationSource,
        *,
        clock: Callable[[], datetime],
        practice_timezone: str = "America/Denver",
        requests_left: Callable[[], int] | None = None,
        alerts: Alerts | None = None,
    ) -> None:
        self.engine = engine
        self.source = source
        self.clock = clock
        self.practice_zone = ZoneInfo(practice_timezone)
        self.requests_left = requests_left
        self.alerts = alerts
        self.planner = Planner(clock, self.practice_zone)

    # -- scope ----------------------------------------------------------------------------

    def _scope(self, session: Session, org_ref: str | None) -> _Scope:
        if org_ref is None:
            orgs = list(session.scalars(select(Organization)))
            windows = [self._window(o) for o in orgs] or [self._window(None)]
            window = Window(min(w.start for w in windows), max(w.end for w in windows))
            patient_ids = select(Affiliation.patient_id).distinct()
            return _Scope("all", None, None, window, self._patients(session, patient_ids))
        org = organization_by_ref(session, org_ref)
        if org is None:
            raise VerifyInputError(f"no such organization: {org_ref}")
        patient_ids = select(Affiliation.patient_id).where(Affiliation.organization_id == org.id)
        return _Scope(
            "organization",
            org.id,
            org.name,
            self._window(org),
            self._patients(session, patient_ids),
        )

    def _window(self, org: Organization | None) -> Window:
        back = org.window_days_back if org else None
        ahead = org.window_days_ahead if org else None
        return default_window(self.clock(), self.practice_zone, back, ahead)

    @staticmethod
    def _patients(session: Session, ids: Any) -> list[tuple[uuid.UUID, str, int | None]]:
        rows = session.execute(
            select(Patient.id, Patient.email, Patient.intakeq_client_id).where(Patient.id.in_(ids))
        ).all()
        return [(pid, email, client_id) for pid, email, client_id in rows]

    def _expected_pages(self, session: Session, scope: _Scope) -> int:
        density = self.planner.known_density(session)
        if density is not None:
            return self.planner.window_cost(density, scope.window)
        stored = sum(
            self.planner.stored_counts(
                session, [p[0] for p in scope.patients], scope.window
            ).values()
        )
        return stored // PAGE_SIZE + 1

    def due_slot(self) -> str | None:
        """This week's slot when its scheduled verification (every organisation, Sunday
        04:00 in the practice's zone) is less than a day old and has not run yet, and no try
        of it that measured nothing (skipped for the budget, IntakeQ failing) is newer than
        an hour; else None."""
        now = self.clock()
        day = latest_weekly_day(now, self.practice_zone)
        slot = f"weekly:{day.isoformat()}"
        since = local_instant(day, VERIFY_AT, self.practice_zone)
        if now - since >= WEEKLY_DUE_FOR:
            return None
        with Session(self.engine) as session:
            if session.scalar(select(Verification.id).where(Verification.slot == slot)):
                return None
            skipped = session.scalar(
                select(Verification.started_at)
                .where(
                    Verification.triggered_by == "schedule",
                    Verification.status.in_(("skipped", "failed")),
                    Verification.started_at >= since,
                )
                .order_by(Verification.started_at.desc())
                .limit(1)
            )
        if skipped is not None and now - skipped < RETRY_SKIPPED_AFTER:
            return None
        return slot

    # -- running --------------------------------------------------------------------------

    def verify(
        self, org_ref: str | None = None, *, trigger: str = "cli", slot: str | None = None
    ) -> VerificationResult:
        """Compare one organisation's window (`org_ref`) or every organisation's (None), and
        record the outcome. With `slot` (the schedule's week) only the first caller runs (the
        others get SlotTaken). Skipped, and recorded so, when the day's budget is short."""
        now = self.clock()
        with Session(self.engine) as session:
            scope = self._scope(session, org_ref)
            expected = self._expected_pages(session, scope)
        result = VerificationResult(
            id=uuid.uuid4(),
            scope=scope.scope,
            organization_id=scope.organization_id,
            organization_name=scope.organization_name,
            window=scope.window,
            started_at=now,
        )
        left = self.requests_left() if self.requests_left is not None else None
        self._open(result, trigger, slot)
        if left is not None and left < expected + KEEP_FOR_SYNCS:
            result.status = "skipped"
            result.error = (
                f"not enough of today's IntakeQ requests: {left} left, the verification needs "
                f"about {expected} and {KEEP_FOR_SYNCS} are kept for the day's syncs"
            )
            return self._close(result)
        try:
            with self.source.counting() as tally:
                try:
                    listed = self._owned(self._fetch(scope.window, expected))
                finally:
                    result.requests_made = tally.sent
        except IntakeQError as exc:
            result.status = "failed"
            result.error = f"IntakeQ: {exc}"
            return self._close(result)
        with Session(self.engine) as session:
            self._compare(session, scope, listed, result)
        result.status = "discrepancies" if result.discrepancies else "accurate"
        return self._close(result)

    def _carriers(self, email: str) -> set[int]:
        """The ClientIds IntakeQ's clients carrying exactly this email (`GET /clients`)."""
        return exact_carriers(email, ((c.client_id, c.email) for c in self.source.clients(email)))

    def _fetch(self, window: Window, expected: int) -> list[Record]:
        records: list[Record] = []
        pages = self.source.appointment_pages(
            AppointmentQuery(start_date=window.start, end_date=window.end)
        )
        try:
            for page in bounded(pages, page_limit(expected, measured=False)):
                records.extend(page)
        finally:
            pages.close()
        return records

    # -- comparing ------------------------------------------------------------------------

    def _owned(self, fetched: list[Record]) -> _Listed:
        """IntakeQ's records with their owners (asking `/clients` where an email needs it)."""
        with Session(self.engine) as session:
            owners = _Owners(self._all_patients(session), self._carriers)
        listed = _Listed()
        for record in fetched:
            if isinstance(record, MalformedRecord):
                if record.appointment_id:
                    listed.unreadable.add(record.appointment_id)
                else:
                    listed.unidentified = True
                continue
            listed.theirs[record.id] = (record, owners.owner(record))
        return listed

    def _compare(
        self, session: Session, scope: _Scope, listed: _Listed, result: VerificationResult
    ) -> None:
        in_scope = {pid for pid, _email, _client in scope.patients}
        lookups = Lookups.load(session)
        theirs, unreadable = listed.theirs, listed.unreadable
        unidentified = listed.unidentified
        start, end = scope.window.bounds(self.practice_zone)
        columns = [
            AppointmentRow.pq_appointment_id,
            AppointmentRow.updated_at,
            *(_column(n) for n in TRACKED_FIELDS),
        ]
        stored_rows = session.execute(
            select(*columns).where(
                or_(
                    (AppointmentRow.patient_id.in_(in_scope))
                    & AppointmentRow.deleted_at.is_(None)
                    & (AppointmentRow.start_time >= start)
                    & (AppointmentRow.start_time < end),
                    AppointmentRow.pq_appointment_id.in_(list(theirs)),
                )
            )
        ).all()
        stored: dict[str, dict[str, Any]] = {}
        for pq_id, updated_at, *values in stored_rows:
            if updated_at > result.started_at:
                # A sync wrote it while we fetched: judged by the next verification.
                unreadable.add(pq_id)
                theirs.pop(pq_id, None)
                continue
            stored[pq_id] = dict(zip(TRACKED_FIELDS, values, strict=True))
        compared: set[str] = set()
        kept = result.discrepancies

        for pq_id, (record, owner) in sorted(theirs.items()):
            row: dict[str, Any] | None = stored.get(pq_id)
            shown_in_scope = (
                row is not None and row["deleted_at"] is None and row["patient_id"] in in_scope
            )
            if owner in in_scope:
                compared.add(pq_id)
                if row is None or row["deleted_at"] is not None:
                    reason = "not stored" if row is None else "deleted here, live in IntakeQ"
                    kept.append(Discrepancy(pq_id, "missing", owner, reason))
                    continue
                self._stale(pq_id, row, _expected(record, owner, lookups), kept)
            elif shown_in_scope and row is not None:
                compared.add(pq_id)
                if owner is None:
                    kept.append(
                        Discrepancy(
                            pq_id,
                            "extra",
                            row["patient_id"],
                            "IntakeQ lists it under a client who is not this patient",
                        )
                    )
                else:  # another of our patients', outside this scope
                    self._stale(pq_id, row, _expected(record, owner, lookups), kept)

        for pq_id, kept_row in sorted(stored.items()):
            if pq_id in theirs or pq_id in unreadable:
                continue
            if kept_row["deleted_at"] is not None or kept_row["patient_id"] not in in_scope:
                continue
            compared.add(pq_id)
            if unidentified:
                continue  # an unreadable record without an Id may be this one
            patient = kept_row["patient_id"]
            kept.append(Discrepancy(pq_id, "extra", patient, "IntakeQ does not list it"))
        result.compared = len(compared)
        result.not_judged = len(unreadable) + (1 if unidentified else 0)

    @staticmethod
    def _all_patients(session: Session) -> list[tuple[uuid.UUID, str, int | None]]:
        ids = select(Affiliation.patient_id).distinct()
        return Verifier._patients(session, ids)

    @staticmethod
    def _stale(
        pq_id: str, row: dict[str, Any], expected: dict[str, Any], kept: list[Discrepancy]
    ) -> None:
        changes = appointment_changes(row, expected)
        if not changes:
            return
        fields = {
            name: (
                {"stored": jsonable(old), "intakeq": jsonable(new)} if name in VALUES_SHOWN else {}
            )
            for name, (old, new) in changes.items()
        }
        kept.append(
            Discrepancy(pq_id, "stale", row["patient_id"], ", ".join(sorted(changes)), fields)
        )

    # -- the record -----------------------------------------------------------------------

    def _open(self, result: VerificationResult, trigger: str, slot: str | None) -> None:
        """Insert the running record; with a `slot`, raise SlotTaken when another has it."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(Verification).values(
                        id=result.id,
                        scope=result.scope,
                        organization_id=result.organization_id,
                        triggered_by=trigger,
                        status="running",
                        slot=slot,
                        window_start=result.window.start,
                        window_end=result.window.end,
                        compared=0,
                        missing=0,
                        extra=0,
                        stale=0,
                        requests_made=0,
                        discrepancies=[],
                        started_at=result.started_at,
                    )
                )
        except IntegrityError:
            raise SlotTaken(slot or "") from None

    def _close(self, result: VerificationResult) -> VerificationResult:
        result.finished_at = self.clock()
        with self.engine.begin() as conn:
            conn.execute(
                update(Verification)
                .where(Verification.id == result.id)
                .values(
                    status=result.status,
                    compared=result.compared,
                    missing=result.count("missing"),
                    extra=result.count("extra"),
                    stale=result.count("stale"),
                    requests_made=result.requests_made,
                    error_message=result.error,
                    discrepancies=[d.as_json() for d in result.discrepancies[:MAX_KEPT]],
                    finished_at=result.finished_at,
                    # A try that measured nothing gives its week's slot back (tried again).
                    **({"slot": None} if result.accuracy is None else {}),
                )
            )
        if self.alerts is not None and result.accuracy is not None:
            self.alerts.verification_finished(
                organization_id=result.organization_id,
                organization_name=result.organization_name,
                compared=result.compared,
                counts={k: result.count(k) for k in ("missing", "extra", "stale")},
            )
        log.info(
            "verify.finished",
            verification_id=str(result.id),
            status=result.status,
            compared=result.compared,
            discrepancies=len(result.discrepancies),
            requests=result.requests_made,
        )
        return result


class SlotTaken(Exception):
    """Another worker already ran (or runs) this week's scheduled verification."""


@dataclass
class _Listed:
    theirs: dict[str, tuple[Appointment, uuid.UUID | None]] = field(default_factory=dict)
    unreadable: set[str] = field(default_factory=set)  # ids of records we cannot read
    unidentified: bool = False  # a record without an Id: absence proves nothing


class _Owners:
    """Whose IntakeQ record is whose, by the verification's own rule (module docstring)."""

    def __init__(
        self,
        patients: Iterable[tuple[uuid.UUID, str, int | None]],
        carriers: Callable[[str], set[int]],
    ) -> None:
        self.by_client: dict[int, uuid.UUID] = {}
        self.by_email: dict[str, tuple[uuid.UUID, int | None]] = {}
        for pid, email, client_id in patients:
            if client_id is not None:
                self.by_client[client_id] = pid
            self.by_email[email.lower()] = (pid, client_id)
        self.carriers = carriers
        self._asked: dict[str, set[int]] = {}

    def owner(self, record: Appointment) -> uuid.UUID | None:
        if record.client_id is not None and record.client_id in self.by_client:
            return self.by_client[record.client_id]
        email = (record.client_email or "").lower()
        if record.client_id is None or email not in self.by_email:
            return None
        patient, _known = self.by_email[email]
        if email not in self._asked:
            self._asked[email] = self.carriers(email)
        # Our patient's email on a ClientId no patient holds: theirs only when it is the one
        # IntakeQ client carrying that email (a re-created or merged profile). Two clients on
        # one email (a family member) make the record nobody's: neither is shown.
        return patient if self._asked[email] == {record.client_id} else None


def _column(name: str) -> Any:
    return AppointmentRow.__table__.c[name]


def _expected(record: Appointment, patient_id: uuid.UUID, lookups: Lookups) -> dict[str, Any]:
    """The stored values IntakeQ's record calls for (the compared ones)."""
    values = row_values(lookups, record, patient_id)
    return {name: values[name] for name in COMPARED_FIELDS}


def latest(session: Session) -> Verification | None:
    """The newest verification that measured something (accurate or with discrepancies)."""
    return session.scalar(
        select(Verification)
        .where(Verification.status.in_(("accurate", "discrepancies")))
        .order_by(Verification.started_at.desc())
        .limit(1)
    )
