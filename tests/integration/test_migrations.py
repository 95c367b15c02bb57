import uuid
from datetime import UTC, datetime

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import JSON, Engine, Uuid, column, insert, inspect, select, table

from pqsync.db.migrate import downgrade, upgrade
from pqsync.db.tables import Base


def test_the_migrations_build_exactly_the_declared_schema(engine: Engine) -> None:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn)
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_the_schema_downgrades_and_upgrades_again(engine: Engine) -> None:
    downgrade(engine, "base")
    assert "appointments" not in inspect(engine).get_table_names()
    upgrade(engine)
    assert "appointments" in inspect(engine).get_table_names()


def test_0003_keeps_only_the_allowed_metadata_of_stored_appointments(engine: Engine) -> None:
    downgrade(engine, "0001")
    now = datetime(2025, 11, 15, tzinfo=UTC)
    patients = table(
        "patients",
        column("id", Uuid()),
        *(column(name) for name in ("first_name", "last_name", "email")),
        column("created_at"),
        column("updated_at"),
    )
    appointments = table(
        "appointments",
        column("id", Uuid()),
        column("pq_appointment_id"),
        column("patient_id", Uuid()),
        column("status"),
        column("start_time"),
        column("metadata", JSON()),
        column("created_at"),
        column("updated_at"),
    )
    patient_id = uuid.uuid4()
    stored = {
        "LocationName": "Main office",
        "PractitionerName": "Dr. C. Rufus Sweeney",
        "ClientPhone": "555-0100",
        "ClientDateOfBirth": "1990-02-03",
        "TelehealthInfo": {"Provider": "IntakeQ Telehealth", "StartUrl": "https://meet.invalid/x"},
        "CustomFields": [{"Name": "Referral source", "Answer": "First Step House"}],
    }
    ids = [uuid.uuid4() for _ in range(3)]
    with engine.begin() as conn:
        conn.execute(
            insert(patients).values(
                id=patient_id,
                first_name="Ann",
                last_name="Lee",
                email="ann.lee@example.org",
                created_at=now,
                updated_at=now,
            )
        )
        for n, (appointment_id, metadata) in enumerate(
            zip(ids, [stored, {}, {"Price": 1}], strict=True)
        ):
            conn.execute(
                insert(appointments).values(
                    id=appointment_id,
                    pq_appointment_id=f"a{n}",
                    patient_id=patient_id,
                    status="confirmed",
                    start_time=now,
                    metadata=metadata,
                    created_at=now,
                    updated_at=now,
                )
            )

    upgrade(engine)

    with engine.connect() as conn:
        kept = dict(conn.execute(select(appointments.c.id, appointments.c.metadata)).all())
    assert kept == {
        ids[0]: {"LocationName": "Main office", "PractitionerName": "Dr. C. Rufus Sweeney"},
        ids[1]: {},
        ids[2]: {},
    }
