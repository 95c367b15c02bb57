"""Writing what a sync fetched: match, diff, batched upsert, soft delete, audit.

One page is written in one transaction (pages queued for the writer share one): a select of
the page's stored rows, one INSERT .. ON CONFLICT DO UPDATE for the new and changed rows,
one insert of activity entries (db/bulk.py sends both without SQLAlchemy's per-row
bookkeeping). What needs no stored row (new rows, their ids and audit entries, in the
driver's values) is built before the write transaction starts, so the write lock (SQLite's
is the database's) is held only for the statements. A page none of whose appointments was
stored when it was matched (most pages of a first sync, which skips that read) goes by
plain inserts instead, with the careful way above as its fallback. A long fetch writes
through a `PageWriter`: pages are committed in a thread of their own (several in one
transaction when they queue up) while the next ones are matched and made ready.
"""

from __future__ import annotations

import queue
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import Dialect, Engine, Table, bindparam, select, type_coerce, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.types import NullType

from pqsync.db.bulk import BulkInsert, KeyedSelect, converter_for
from pqsync.db.engine import begin_write
from pqsync.db.ids import new_id
from pqsync.db.tables import Appointment as AppointmentRow
from pqsync.db.tables import Patient, PatientActivity, Provider, ProviderIntakeQSettings, Service
from pqsync.domain.diff import (
    TRACKED_FIELDS,
    appointment_changes,
    changes_as_json,
    describe_changes,
)
from pqsync.domain.status import map_status
from pqsync.domain.windows import Window
from pqsync.intakeq.models import Appointment, MalformedRecord
from pqsync.services.sync_types import (
    Actor,
    PatientResult,
    SyncedAppointment,
    SyncResult,
)

Record = Appointment | MalformedRecord

ACTIVITY_TABLE = cast(Table, PatientActivity.__table__)
APPOINTMENT_TABLE = cast(Table, AppointmentRow.__table__)
PATIENT_TABLE = cast(Table, Patient.__table__)
# A column read as the driver returns it, without SQLAlchemy's result processing.
_AS_STORED = NullType()
# What a page's diff reads of each stored row.
_STORED_COLUMNS = ("id", "pq_appointment_id", *TRACKED_FIELDS)

# Patients whose stored appointments one statement looks for (see `holds_none_in`).
_PATIENTS_PER_READ = 500
# The most appointments (or warnings) one run lists in its log.
MAX_LISTED_UNKNOWN = 200

_UPSERT_COLUMNS = (
    "patient_id",
    "provider_id",
    "service_id",
    "intakeq_practitioner_id",
    "intakeq_client_id",
    "status",
    "intakeq_status",
    "start_time",
    "end_time",
    "location_name",
    "metadata",
    "intakeq_last_modified",
    "deleted_at",
    "updated_at",
    "last_synced_at",
)
# Every column an upsert writes, in the order of its row tuples.
_WRITTEN = ("id", "pq_appointment_id", "created_at", *_UPSERT_COLUMNS)
_ACTIVITY_COLUMNS = (
    "id",
    "patient_id",
    "appointment_id",
    "sync_log_id",
    "activity_type",
    "description",
    "changes",
    "actor",
    "actor_user_id",
    "created_at",
)


@lru_cache(maxsize=4096)
def _local_minute(moment: datetime, zone: ZoneInfo) -> str:
    """When an appointment starts, as its activity entry says it ("2026-12-03 10:00 MST").

    Remembered: a page's appointments share a few start times, and strftime is slow.
    """
    return f"{moment.astimezone(zone):%Y-%m-%d %H:%M %Z}"


def _activity_row(activity: dict[str, Any]) -> list[Any]:
    return [activity[c] for c in _ACTIVITY_COLUMNS]


@dataclass(slots=True)
class _Pending:
    """A matched appointment that is probably stored already: diffed under the lock."""

    appointment: Appointment
    patient_id: uuid.UUID


@dataclass(slots=True)
class _Prepared:
    """One matched appointment, made ready before the page's write transaction."""

    appointment: Appointment
    patient_id: uuid.UUID
    incoming: dict[str, Any]
    row_id: uuid.UUID
    row: list[Any]  # the upsert's values, converted for the driver
    created: dict[str, Any]  # its activity entry, should it be new
    created_row: list[Any]


@dataclass(slots=True)
class StagedPage:
    """A matched page, ready for its write transaction (`AppointmentStore.commit_page`)."""

    items: list[_Prepared | _Pending]
    learned: dict[uuid.UUID, int]  # ClientIds learned while matching it, written with it
    now: datetime

    @staticmethod
    def joined(pages: list[StagedPage]) -> StagedPage:
        """Consecutive staged pages as one, for one transaction (the latest page's time)."""
        if len(pages) == 1:
            return pages[0]
        items = [item for page in pages for item in page.items]
        learned = {k: v for page in pages for k, v in page.learned.items()}
        return StagedPage(items, learned, pages[-1].now)


class PageWriter:
    """Commits staged pages in a thread of its own, in order.

    `write(page)` stages the page in the caller's thread and queues it; up to `DEPTH` staged
    pages wait (then `write` waits for room). The thread takes every page waiting, up to
    `BATCH`, into one transaction: staging (Python's work) overlaps the database's work,
    which runs without the GIL, and when the database is the slower side its commits are
    shared by several pages. Once a commit fails, neither its pages nor any after them are
    written; the failure is raised by the next `write` or by `close`. Use as a context
    manager: leaving it waits for the queued pages.
    """

    DEPTH = 4  # staged pages that may wait for the writer
    BATCH = 4  # the most pages one transaction takes

    def __init__(self, store: AppointmentStore, ctx: RunContext) -> None:
        self._store = store
        self._ctx = ctx
        self._session = Session(store.engine, expire_on_commit=False)
        self._queue: queue.Queue[StagedPage | None] = queue.Queue(maxsize=self.DEPTH)
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._commit_queued, name="pqsync-writer")
        self._thread.start()

    def write(self, page: list[Record]) -> None:
        self._raise_failure()
        self._queue.put(self._store.stage_page(self._ctx, page))

    def _commit_queued(self) -> None:
        closing = False
        while not closing:
            batch, closing = self._next_batch()
            if batch and self._failure is None:  # after a failure, pages are dropped
                try:
                    self._store.commit_page(self._session, self._ctx, StagedPage.joined(batch))
                except BaseException as exc:  # raised in the caller's thread
                    self._failure = exc

    def _next_batch(self) -> tuple[list[StagedPage], bool]:
        """The next queued page and every page queued behind it (up to `BATCH`), waiting
        for the first; True once `close` has asked the thread to end."""
        batch: list[StagedPage] = []
        page = self._queue.get()
        while page is not None:
            batch.append(page)
            if len(batch) == self.BATCH:
                return batch, False
            try:
                page = self._queue.get_nowait()
            except queue.Empty:
                return batch, False
        return batch, True

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def close(self) -> None:
        try:
            if self._thread.is_alive():
                self._queue.put(None)
                self._thread.join()
            self._raise_failure()
        finally:
            self._session.close()

    def __enter__(self) -> PageWriter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


@dataclass
class Lookups:
    """Id maps loaded once per run."""

    providers_by_practitioner: dict[str, uuid.UUID]
    provider_names: dict[uuid.UUID, str]
    services_by_intakeq: dict[str, uuid.UUID]

    @classmethod
    def load(cls, session: Session) -> Lookups:
        mapped = session.execute(
            select(ProviderIntakeQSettings.intakeq_practitioner_id, Provider.id).join(
                Provider, Provider.id == ProviderIntakeQSettings.provider_id
            )
        ).all()
        names = session.execute(select(Provider.id, Provider.name)).all()
        services = session.execute(select(Service.intakeq_service_id, Service.id)).all()
        return cls(
            providers_by_practitioner=dict(mapped),
            provider_names=dict(names),
            services_by_intakeq=dict(services),
        )


class PatientMatcher:
    """Exact matching of IntakeQ clients to our patients: ClientId first, else email.

    Never trusts IntakeQ's partial-match `client` filter. A patient's ClientId is learned on
    the first email match and used from then on.
    """

    def __init__(self, patients: Iterable[Patient]) -> None:
        self.by_client_id: dict[int, Patient] = {}
        self.by_email: dict[str, Patient] = {}
        for patient in patients:
            if patient.intakeq_client_id is not None:
                self.by_client_id[patient.intakeq_client_id] = patient
            self.by_email[patient.email.lower()] = patient
        self.learned: dict[uuid.UUID, int] = {}

    def owner_of(self, client_id: int | None, email: str | None) -> Patient | None:
        """Whose record this is, without learning anything (for records we cannot use)."""
        if client_id is not None and client_id in self.by_client_id:
            return self.by_client_id[client_id]
        patient = self.by_email.get((email or "").lower()) if email else None
        if patient is not None and patient.intakeq_client_id not in (None, client_id):
            return None
        return patient

    def match(self, appointment: Appointment) -> Patient | None:
        if appointment.client_id is not None and appointment.client_id in self.by_client_id:
            return self.by_client_id[appointment.client_id]
        email = (appointment.client_email or "").lower()
        patient = self.by_email.get(email) if email else None
        if patient is None or patient.intakeq_client_id is not None:
            # Unknown, or our email now belongs to another IntakeQ client: not this patient.
            return None
        if appointment.client_id is not None:
            patient.intakeq_client_id = appointment.client_id
            self.by_client_id[appointment.client_id] = patient
            self.learned[patient.id] = appointment.client_id
        return patient


@dataclass
class RunContext:
    """What one run carries from page to page."""

    run_id: uuid.UUID
    actor: Actor
    zone: ZoneInfo
    lookups: Lookups
    matcher: PatientMatcher
    results: dict[uuid.UUID, PatientResult]
    result: SyncResult
    # Every Id IntakeQ returned in this run, matched or not: absence means only what it says.
    fetched_ids: set[str] = field(default_factory=set)
    # Ids written (or judged not ours) in this run, so overlapping fetches count once.
    handled_ids: set[str] = field(default_factory=set)
    # A malformed record without an Id makes absence unprovable for this run.
    unidentified_malformed: bool = False
    # Set when the fetched window held no stored row as the run began (a first sync): pages
    # are then not pre-read for stored rows but go by plain inserts, and the first page that
    # clashes (rows stored meanwhile, or moved in from outside the window) turns it off.
    presume_fresh: bool = False
    # Per-appointment outcomes are kept only where someone reads them (a patient's run):
    # an organisation's or the nightly run stays flat in memory however much it syncs.
    keep_appointments: bool = True


class AppointmentStore:
    def __init__(self, engine: Engine, clock: Callable[[], datetime]) -> None:
        self.engine = engine
        self.clock = clock
        # Rendered on first use, for the engine's dialect.
        self._upsert_statement: BulkInsert | None = None
        self._insert_statement: BulkInsert | None = None
        self._selects: dict[tuple[str, ...], KeyedSelect] = {}
        self._activity_statement: BulkInsert | None = None

    def write_page(
        self,
        session: Session,
        ctx: RunContext,
        page: list[Record],
        *,
        only_patient: uuid.UUID | None = None,
    ) -> None:
        """Match, diff and write one page in one transaction of `session`.

        With `only_patient`, records of other patients are left for their own query.
        """
        self.commit_page(session, ctx, self.stage_page(ctx, page, only_patient=only_patient))

    def stage_page(
        self, ctx: RunContext, page: list[Record], *, only_patient: uuid.UUID | None = None
    ) -> StagedPage:
        """Match a page and build, before any write lock, what needs no stored row.

        New rows (their ids, driver values and activity entries) are made ready here; the
        write transaction (`commit_page`) then only reads the page's stored rows, diffs the
        few that exist and sends the statements. Everything this touches in `ctx` is the
        matching's (fetched and handled ids, unknown and malformed counts, unmatched
        practitioners, learned ClientIds, handed over in the staged page): a page can be
        staged while the one before it is being committed in another thread.
        """
        matched: list[tuple[Appointment, Patient]] = []
        unmatched = ctx.result.unmatched_practitioners
        practitioners = ctx.lookups.providers_by_practitioner
        for record in page:
            if isinstance(record, MalformedRecord):
                self._note_malformed(ctx, record)
                continue
            ctx.fetched_ids.add(record.id)
            if record.id in ctx.handled_ids:
                continue  # already written in this run (pages shift, plans overlap)
            patient = ctx.matcher.match(record)
            if patient is not None and only_patient is not None and patient.id != only_patient:
                continue
            ctx.handled_ids.add(record.id)
            if patient is None or patient.id not in ctx.results:
                self._note_unknown(ctx, record)
                continue
            practitioner = record.practitioner_id
            if practitioner and practitioner not in practitioners:
                unmatched[practitioner] = unmatched.get(practitioner, 0) + 1
            matched.append((record, patient))
        now = self.clock()
        stored = set() if ctx.presume_fresh else self._stored_ids([a.id for a, _ in matched])
        items = [
            _Pending(a, p.id) if a.id in stored else self._prepare(ctx, a, p.id, now)
            for a, p in matched
        ]
        learned = dict(ctx.matcher.learned)
        ctx.matcher.learned.clear()
        return StagedPage(items, learned, now)

    def commit_page(self, session: Session, ctx: RunContext, staged: StagedPage) -> None:
        """Write a staged page in one transaction of `session`: diff, upsert, audit.

        Touches only the per-patient results in `ctx` (counts and outcomes).
        """
        try:
            begin_write(session)
            if staged.items and not self._insert_fresh(session, ctx, staged.items):
                self._write(session, ctx, staged.items, staged.now)
            if staged.learned:
                session.execute(
                    update(PATIENT_TABLE)
                    .where(PATIENT_TABLE.c.id == bindparam("learned_id"))
                    .values(intakeq_client_id=bindparam("learned_client_id")),
                    [
                        {"learned_id": patient_id, "learned_client_id": client_id}
                        for patient_id, client_id in staged.learned.items()
                    ],
                )
            session.commit()
        except BaseException:
            session.rollback()
            raise

    def writer(self, ctx: RunContext) -> PageWriter:
        """Pages written in a thread of their own while the caller stages the next one."""
        return PageWriter(self, ctx)

    @staticmethod
    def _note_malformed(ctx: RunContext, record: MalformedRecord) -> None:
        """A broken record is an error when it is (or may be) one of this run's patients'."""
        if record.appointment_id:
            ctx.fetched_ids.add(record.appointment_id)
        owner = ctx.matcher.owner_of(record.client_id, record.client_email)
        if owner is None and (record.client_id is not None or record.client_email):
            ctx.result.unknown_clients += 1  # another client's record: not ours to judge
            return
        if owner is not None and owner.id not in ctx.results:
            return
        if not record.appointment_id:
            ctx.unidentified_malformed = True
        ctx.result.malformed += 1
        if len(ctx.result.warnings) < MAX_LISTED_UNKNOWN:
            where = f" (appointment {record.appointment_id})" if record.appointment_id else ""
            ctx.result.warnings.append(f"malformed record skipped{where}: {record.reason}")

    @staticmethod
    def _note_unknown(ctx: RunContext, record: Appointment) -> None:
        result = ctx.result
        result.unknown_clients += 1
        if len(result.unknown_appointments) < MAX_LISTED_UNKNOWN:
            result.unknown_appointments.append(
                {"clientId": record.client_id, "appointmentId": record.id}
            )

    def _stored_ids(self, pq_ids: list[str]) -> set[str]:
        """Which of these appointments are stored already: read before the write lock,
        on a connection of its own, to tell which rows are worth preparing as new."""
        if not pq_ids:
            return set()
        with self.engine.connect() as conn:
            known = self._keyed(conn.dialect, ("pq_appointment_id",)).fetch(conn, pq_ids)
        return {pq_id for (pq_id,) in known}

    def holds_none_in(self, window: Window, zone: ZoneInfo, patient_ids: list[uuid.UUID]) -> bool:
        """Whether none of these patients has an appointment (live or deleted) stored with a
        start in the window. Read through the (patient, start) index, a chunk of patients
        at a time."""
        start, end = window.bounds(zone)
        starts = AppointmentRow.start_time
        with self.engine.connect() as conn:
            for first in range(0, len(patient_ids), _PATIENTS_PER_READ):
                chunk = patient_ids[first : first + _PATIENTS_PER_READ]
                found = conn.scalar(
                    select(AppointmentRow.id)
                    .where(AppointmentRow.patient_id.in_(chunk), starts >= start, starts < end)
                    .limit(1)
                )
                if found is not None:
                    return False
        return True

    def _keyed(self, dialect: Dialect, columns: tuple[str, ...]) -> KeyedSelect:
        statement = self._selects.get(columns)
        if statement is None:
            statement = KeyedSelect(APPOINTMENT_TABLE, dialect, "pq_appointment_id", columns)
            self._selects[columns] = statement
        return statement

    def _prepare(
        self,
        ctx: RunContext,
        appointment: Appointment,
        patient_id: uuid.UUID,
        now: datetime,
        incoming: dict[str, Any] | None = None,
    ) -> _Prepared:
        """The row to upsert and, should it be new, its activity entry; in driver values."""
        if incoming is None:
            incoming = self._row_values(ctx, appointment, patient_id)
        provider_id = incoming["provider_id"]
        provider_name = ctx.lookups.provider_names.get(provider_id) if provider_id else None
        # For a row that turns out to exist, ON CONFLICT keeps its id and created_at.
        row_id = new_id()
        values = {**incoming, "id": row_id, "created_at": now}
        values["updated_at"] = values["last_synced_at"] = now
        created = self._activity(
            ctx,
            patient_id,
            row_id,
            "appointment_created",
            f"New appointment {appointment.id} on {_local_minute(appointment.start, ctx.zone)} "
            f"({incoming['status']}"
            + (f", {provider_name}" if provider_name else "")
            + ") synced from IntakeQ",
            {},
            now,
        )
        return _Prepared(
            appointment=appointment,
            patient_id=patient_id,
            incoming=incoming,
            row_id=row_id,
            row=self._upsert().convert([values[c] for c in _WRITTEN]),
            created=created,
            created_row=self._activities().convert([created[c] for c in _ACTIVITY_COLUMNS]),
        )

    def _write(
        self,
        session: Session,
        ctx: RunContext,
        prepared: list[_Prepared | _Pending],
        now: datetime,
    ) -> None:
        connection = session.connection()
        # Plain rows of just the compared columns: ORM objects cost more than the write.
        stored_rows = self._keyed(connection.dialect, _STORED_COLUMNS).fetch(
            connection, [i.appointment.id for i in prepared]
        )
        existing = {row[1]: dict(zip(_STORED_COLUMNS, row, strict=True)) for row in stored_rows}
        writes: list[_Prepared] = []
        new_rows: list[_Prepared] = []
        updates: list[dict[str, Any]] = []
        labels = {str(k): v for k, v in ctx.lookups.provider_names.items()}
        for pending in prepared:
            appointment, patient_id = pending.appointment, pending.patient_id
            stored = existing.get(appointment.id)
            if stored is None:
                item = self._ready(ctx, pending, now)
                row_id = item.row_id
                action = "new"
                writes.append(item)
                new_rows.append(item)
            else:
                row_id = stored["id"]
                incoming = self._incoming(ctx, pending)
                changes = appointment_changes(stored, incoming)
                if changes:
                    action = "updated"
                    writes.append(self._ready(ctx, pending, now, incoming))
                    kind = (
                        "appointment_restored"
                        if "deleted_at" in changes and incoming["deleted_at"] is None
                        else "appointment_updated"
                    )
                    updates.append(
                        self._activity(
                            ctx,
                            patient_id,
                            row_id,
                            kind,
                            f"Appointment {appointment.id} changed in IntakeQ: "
                            + describe_changes(changes, labels),
                            changes_as_json(changes),
                            now,
                        )
                    )
                else:
                    action = "unchanged"
            self._outcome(ctx, appointment, patient_id, row_id, action)
        if not writes:
            return
        upsert = self._upsert()
        # A concurrent run may have inserted a row we found missing: its id is the one
        # that stays, and our activity entry must point at it.
        returned = upsert.execute(connection, [w.row for w in writes], converted=True, raw=True)
        kept = {row[0]: row for row in returned}
        activity_rows = [self._activities().convert(a) for a in map(_activity_row, updates)]
        for item in new_rows:
            if kept[item.appointment.id][1] == item.row[0]:  # our id stayed (driver values)
                activity_rows.append(item.created_row)
                continue
            stays = upsert.processed(kept[item.appointment.id])[1]
            activity_rows.append(
                self._activities().convert(_activity_row({**item.created, "appointment_id": stays}))
            )
            for synced in ctx.results[item.patient_id].appointments:
                if synced.id == item.row_id:
                    synced.id = stays
        self._activities().execute(connection, activity_rows, converted=True)

    def _insert_fresh(
        self, session: Session, ctx: RunContext, items: list[_Prepared | _Pending]
    ) -> bool:
        """Write a page none of whose appointments was stored when it was staged (the bulk of
        a first sync; or presumed so, see `RunContext.presume_fresh`) by plain inserts, first
        thing in its transaction: no re-read, no ON CONFLICT, COPY on PostgreSQL. False when
        the page is not such a page, or when it must go the careful way (re-read, diff,
        upsert) after all.

        One of them may be stored after all (by another run since, or, on a presumed-fresh
        page, from outside the window): then the insert breaks the unique key, the
        transaction (which holds nothing else yet) is rolled back and begun again, the
        run's presumption ends, and False sends the page the careful way. Any other
        integrity error meets that way too and is raised there.
        """
        fresh = [item for item in items if isinstance(item, _Prepared)]
        if len(fresh) != len(items):
            return False
        try:
            connection = session.connection()
            self._inserts().execute(connection, [i.row for i in fresh], converted=True)
            self._activities().execute(connection, [i.created_row for i in fresh], converted=True)
        except IntegrityError:
            session.rollback()
            begin_write(session)
            ctx.presume_fresh = False
            return False
        for item in fresh:
            self._outcome(ctx, item.appointment, item.patient_id, item.row_id, "new")
        return True

    @staticmethod
    def _outcome(
        ctx: RunContext,
        appointment: Appointment,
        patient_id: uuid.UUID,
        row_id: uuid.UUID,
        action: str,
    ) -> None:
        """Count what a write did to one appointment (and list it, in a patient's run)."""
        result = ctx.results[patient_id]
        if action == "new":
            result.summary.new += 1
        elif action == "updated":
            result.summary.updated += 1
        else:
            result.summary.unchanged += 1
        if ctx.keep_appointments:
            result.appointments.append(
                SyncedAppointment(
                    id=row_id,
                    pq_appointment_id=appointment.id,
                    start_time=appointment.start,
                    provider_name=AppointmentStore._provider_name(ctx, appointment),
                    status=map_status(appointment.status),
                    action=action,
                )
            )

    def _inserts(self) -> BulkInsert:
        if self._insert_statement is None:
            self._insert_statement = BulkInsert(APPOINTMENT_TABLE, self.engine.dialect, _WRITTEN)
        return self._insert_statement

    def _upsert(self) -> BulkInsert:
        if self._upsert_statement is None:
            self._upsert_statement = BulkInsert(
                APPOINTMENT_TABLE,
                self.engine.dialect,
                _WRITTEN,
                conflict_on="pq_appointment_id",
                update=_UPSERT_COLUMNS,
                returning=("pq_appointment_id", "id"),
            )
        return self._upsert_statement

    def _ready(
        self,
        ctx: RunContext,
        pending: _Prepared | _Pending,
        now: datetime,
        incoming: dict[str, Any] | None = None,
    ) -> _Prepared:
        if isinstance(pending, _Prepared):
            return pending
        return self._prepare(ctx, pending.appointment, pending.patient_id, now, incoming)

    def _incoming(self, ctx: RunContext, pending: _Prepared | _Pending) -> dict[str, Any]:
        if isinstance(pending, _Prepared):
            return pending.incoming
        return self._row_values(ctx, pending.appointment, pending.patient_id)

    @staticmethod
    def _provider_name(ctx: RunContext, appointment: Appointment) -> str | None:
        lookups = ctx.lookups
        provider_id = lookups.providers_by_practitioner.get(appointment.practitioner_id or "")
        return lookups.provider_names.get(provider_id) if provider_id else None

    def _activities(self) -> BulkInsert:
        if self._activity_statement is None:
            self._activity_statement = BulkInsert(
                ACTIVITY_TABLE, self.engine.dialect, _ACTIVITY_COLUMNS
            )
        return self._activity_statement

    @staticmethod
    def _row_values(
        ctx: RunContext, appointment: Appointment, patient_id: uuid.UUID
    ) -> dict[str, Any]:
        """The columns IntakeQ's record sets."""
        lookups = ctx.lookups
        provider_id = (
            lookups.providers_by_practitioner.get(appointment.practitioner_id)
            if appointment.practitioner_id
            else None
        )
        service_id = (
            lookups.services_by_intakeq.get(appointment.service_id)
            if appointment.service_id
            else None
        )
        return {
            "pq_appointment_id": appointment.id,
            "patient_id": patient_id,
            "provider_id": provider_id,
            "service_id": service_id,
            "intakeq_practitioner_id": appointment.practitioner_id,
            "intakeq_client_id": appointment.client_id,
            "status": map_status(appointment.status),
            "intakeq_status": appointment.status,
            "start_time": appointment.start,
            "end_time": appointment.end,
            "location_name": appointment.location_name,
            "metadata": appointment.metadata,
            "intakeq_last_modified": appointment.last_modified,
            "deleted_at": None,
        }

    def _activity(
        self,
        ctx: RunContext,
        patient_id: uuid.UUID,
        appointment_id: uuid.UUID,
        activity_type: str,
        description: str,
        changes: dict[str, Any],
        now: datetime,
    ) -> dict[str, Any]:
        return {
            "id": new_id(),
            "patient_id": patient_id,
            "appointment_id": appointment_id,
            "sync_log_id": ctx.run_id,
            "activity_type": activity_type,
            "description": description,
            "changes": changes,
            "actor": ctx.actor.kind,
            "actor_user_id": ctx.actor.user_id,
            "created_at": now,
        }

    # -- deletions -----------------------------------------------------------------------

    def absent_rows(
        self,
        session: Session,
        ctx: RunContext,
        patient_ids: Iterable[uuid.UUID],
        window: Window,
    ) -> list[AppointmentRow]:
        """Live stored rows of these patients in the window that a complete fetch did not return."""
        begin_write(session)  # the caller soft-deletes them in the same transaction
        start, end = window.bounds(ctx.zone)
        # Streamed in chunks: a window of 100,000 stored rows is never in memory at once.
        # Patient ids are compared as the driver returns them (no UUID object per row).
        dialect = session.get_bind().dialect
        to_driver = converter_for(PATIENT_TABLE.c.id.type, dialect)
        wanted = {to_driver(p) if to_driver is not None else p for p in patient_ids}
        stored = session.execute(
            select(
                AppointmentRow.pq_appointment_id,
                type_coerce(AppointmentRow.patient_id, _AS_STORED),
            )
            .execution_options(yield_per=5000)
            .where(
                AppointmentRow.deleted_at.is_(None),
                AppointmentRow.start_time >= start,
                AppointmentRow.start_time < end,
            )
        )
        fetched = ctx.fetched_ids
        absent = [pq_id for pq_id, patient in stored if pq_id not in fetched and patient in wanted]
        if not absent:
            return []
        return self.rows_by_pq_id(session, absent)

    def rows_by_pq_id(self, session: Session, pq_ids: list[str]) -> list[AppointmentRow]:
        if not pq_ids:
            return []
        return list(
            session.scalars(
                select(AppointmentRow).where(AppointmentRow.pq_appointment_id.in_(pq_ids))
            )
        )

    def soft_delete(
        self, session: Session, ctx: RunContext, rows: list[AppointmentRow], reason: str
    ) -> None:
        """Mark rows deleted (kept for history) and audit each; counts go to their patients."""
        now = self.clock()
        activities = []
        for row in rows:
            if row.deleted_at is not None:
                continue
            row.deleted_at = now
            row.updated_at = now
            patient_result = ctx.results.get(row.patient_id)
            if patient_result is not None:
                patient_result.summary.deleted += 1
            if patient_result is not None and ctx.keep_appointments:
                patient_result.appointments.append(
                    SyncedAppointment(
                        id=row.id,
                        pq_appointment_id=row.pq_appointment_id,
                        start_time=row.start_time,
                        provider_name=ctx.lookups.provider_names.get(row.provider_id)
                        if row.provider_id
                        else None,
                        status=row.status,
                        action="deleted",
                    )
                )
            activities.append(
                self._activity(
                    ctx,
                    row.patient_id,
                    row.id,
                    "appointment_deleted",
                    f"Appointment {row.pq_appointment_id} was deleted in IntakeQ ({reason})",
                    changes_as_json({"deleted_at": (None, now)}),
                    now,
                )
            )
        entries = [_activity_row(activity) for activity in activities]
        self._activities().execute(session.connection(), entries)
        session.commit()
