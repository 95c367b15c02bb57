"""The bulk upsert and the SQLite write gate, on the test's real database."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from sqlalchemy import Engine, Table, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from pqsync.db.bulk import BulkInsert, KeyedSelect
from pqsync.db.engine import begin_write, is_sqlite, write_connection
from pqsync.db.ids import new_id
from pqsync.db.tables import Appointment, Patient, SyncState

APPOINTMENTS = cast(Table, Appointment.__table__)
COLUMNS = (
    "id",
    "pq_appointment_id",
    "patient_id",
    "status",
    "start_time",
    "metadata",
    "created_at",
    "updated_at",
)
START = datetime(2025, 10, 24, 16, 0, 0, 1234, tzinfo=UTC)


def a_patient(engine: Engine) -> uuid.UUID:
    with Session(engine) as session:
        patient = Patient(first_name="Bulk", last_name="Test", email=f"{uuid.uuid4()}@t.test")
        session.add(patient)
        session.commit()
        return patient.id


def upsert(engine: Engine) -> BulkInsert:
    return BulkInsert(
        APPOINTMENTS,
        engine.dialect,
        COLUMNS,
        conflict_on="pq_appointment_id",
        update=("status", "start_time", "metadata"),
        returning=("pq_appointment_id", "id"),
    )


# A plain insert (no conflict clause, nothing returned) goes by COPY on PostgreSQL.
@pytest.mark.parametrize("plain", [False, True], ids=["upsert", "plain insert"])
def test_rows_are_inserted_and_read_back_like_orm_rows(engine: Engine, plain: bool) -> None:
    patient = a_patient(engine)
    rows = [
        (
            new_id(),
            f"A{i}",
            patient,
            "booked",
            START + timedelta(hours=i),
            {"Note": f"n{i}"},
            START,
            START,
        )
        for i in range(250)
    ]
    writer = BulkInsert(APPOINTMENTS, engine.dialect, COLUMNS) if plain else upsert(engine)
    writer.max_rows = 40  # several statements, the last one short
    with engine.begin() as conn:
        returned = writer.execute(conn, rows)
    assert dict(returned) == ({} if plain else {pq: row_id for row_id, pq, *_ in rows})
    with Session(engine) as session:
        stored = {a.pq_appointment_id: a for a in session.scalars(select(Appointment))}
    assert len(stored) == 250
    first = stored["A0"]
    # Types come back exactly as written through the ORM: aware UTC, UUIDs, JSON.
    assert first.start_time == START and first.start_time.tzinfo is not None
    assert first.patient_id == patient and first.extra == {"Note": "n0"}
    # The ORM's own queries compare against what the bulk writer stored.
    with Session(engine) as session:
        later = session.scalars(
            select(Appointment.pq_appointment_id).where(Appointment.start_time >= START)
        ).all()
    assert len(later) == 250


def test_a_conflict_updates_the_listed_columns_and_keeps_the_stored_id(engine: Engine) -> None:
    patient = a_patient(engine)
    writer = upsert(engine)
    original = new_id()
    with engine.begin() as conn:
        writer.execute(conn, [(original, "A1", patient, "booked", START, {}, START, START)])
    with engine.begin() as conn:
        returned = writer.execute(
            conn,
            [
                (
                    new_id(),
                    "A1",
                    patient,
                    "cancelled",
                    START + timedelta(days=1),
                    {"x": 1},
                    START,
                    START,
                ),
                (new_id(), "A2", patient, "booked", START, {}, START, START),
            ],
        )
    kept = dict(returned)
    assert kept["A1"] == original  # another writer's row keeps its id: the caller renames
    with Session(engine) as session:
        row = session.scalars(select(Appointment).filter_by(pq_appointment_id="A1")).one()
    assert (row.status, row.start_time, row.extra) == (
        "cancelled",
        START + timedelta(days=1),
        {"x": 1},
    )
    assert writer.execute(engine.connect(), []) == []


@pytest.mark.parametrize("plain", [False, True], ids=["upsert", "plain insert"])
def test_a_failed_statement_leaves_nothing_written_and_repeats_no_values(
    engine: Engine, plain: bool
) -> None:
    patient = a_patient(engine)
    writer = BulkInsert(APPOINTMENTS, engine.dialect, COLUMNS) if plain else upsert(engine)
    note = {"Note": "private-note-4711"}
    rows: list[tuple[Any, ...]] = [(new_id(), "A1", patient, "booked", START, note, START, START)]
    rows.append((new_id(), "A2", uuid.uuid4(), "booked", START, note, START, START))  # no patient
    with pytest.raises(DBAPIError, match=r"(?i)foreign key") as failure, engine.begin() as conn:
        writer.execute(conn, rows)
    assert "private-note-4711" not in str(failure.value)
    with Session(engine) as session:
        assert session.scalars(select(Appointment)).all() == []


def _gate_of(engine: Engine) -> threading.Lock:
    with engine.connect() as conn:
        gate = getattr(conn.connection.dbapi_connection, "gate", None)
    assert isinstance(gate, type(threading.Lock()))
    return gate


@pytest.fixture
def sqlite_engine(engine: Engine) -> Engine:
    if not is_sqlite(engine):
        pytest.skip("the write gate is SQLite's (PostgreSQL has row locks)")
    return engine


def test_the_gate_is_held_for_a_write_transaction_and_released_however_it_ends(
    sqlite_engine: Engine,
) -> None:
    gate = _gate_of(sqlite_engine)
    with Session(sqlite_engine) as session:
        begin_write(session)
        session.add(SyncState(name="k1", value={}, updated_at=START))
        session.flush()
        assert gate.locked()
        session.commit()
    assert not gate.locked()
    with pytest.raises(RuntimeError), write_connection(sqlite_engine) as conn, conn.begin():
        assert gate.locked()
        raise RuntimeError("boom")  # rolled back
    assert not gate.locked()
    with Session(sqlite_engine) as session:
        begin_write(session)
        session.flush()
        assert gate.locked()
    assert not gate.locked()  # closed without commit: the pool's reset rolled it back
    # Read transactions never take it.
    with Session(sqlite_engine) as session:
        session.scalars(select(SyncState)).all()
        assert not gate.locked()


def test_a_second_writer_thread_waits_for_the_first_and_then_writes(
    sqlite_engine: Engine,
) -> None:
    gate = _gate_of(sqlite_engine)
    first_in = threading.Event()
    release_first = threading.Event()
    order: list[str] = []

    def first() -> None:
        with Session(sqlite_engine) as session:
            begin_write(session)
            session.add(SyncState(name="first", value={}, updated_at=START))
            session.flush()
            first_in.set()
            release_first.wait(10)
            order.append("first commits")
            session.commit()

    def second() -> None:
        first_in.wait(10)
        with Session(sqlite_engine) as session:
            begin_write(session)  # queues on the gate
            session.add(SyncState(name="second", value={}, updated_at=START))
            session.flush()
            order.append("second writes")
            session.commit()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    first_in.wait(10)
    assert gate.locked()
    release_first.set()
    for thread in threads:
        thread.join(30)
    assert order == ["first commits", "second writes"]
    with Session(sqlite_engine) as session:
        assert set(session.scalars(select(SyncState.name))) == {"first", "second"}
    assert not gate.locked()


def test_a_keyed_select_finds_exactly_the_stored_keys_with_python_values(engine: Engine) -> None:
    patient = a_patient(engine)
    rows = [
        (new_id(), f"K{i}", patient, "booked", START, {"i": i}, START, START) for i in range(30)
    ]
    with engine.begin() as conn:
        upsert(engine).execute(conn, rows)
    select_rows = KeyedSelect(
        APPOINTMENTS, engine.dialect, "pq_appointment_id", ("pq_appointment_id", "id", "start_time")
    )
    select_rows.max_keys = 7  # SQLite sends several statements
    wanted = [f"K{i}" for i in range(0, 30, 2)] + ["missing", "K999"]
    with engine.connect() as conn:
        found = select_rows.fetch(conn, wanted)
        assert select_rows.fetch(conn, []) == []
    ids = {pq: row_id for row_id, pq, *_ in rows}
    assert sorted(found) == sorted((f"K{i}", ids[f"K{i}"], START) for i in range(0, 30, 2))


def test_raw_returning_values_compare_with_converted_ones(engine: Engine) -> None:
    patient = a_patient(engine)
    writer = upsert(engine)
    row_id = new_id()
    row = writer.convert([row_id, "R1", patient, "booked", START, {}, START, START])
    with engine.begin() as conn:
        (returned,) = writer.execute(conn, [row], converted=True, raw=True)
    assert returned[1] == row[0]  # the driver's form of the id we sent
    assert writer.processed(returned) == ("R1", row_id)
