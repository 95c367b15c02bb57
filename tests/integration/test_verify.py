"""`pqsync verify`: after a sync it measures 100%; a row changed behind pqsync's back, one
IntakeQ changed since, one IntakeQ deleted and one never stored are each named by id."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from intakeq_sim import AppointmentChanges, SimulatorServer
from pqsync.bootstrap import App
from pqsync.db.tables import Appointment, Verification
from pqsync.services.sync import SyncService
from pqsync.services.verify import Verifier, VerifyInputError

ORG = "first-step-house"


def verifier(pq: App) -> Verifier:
    return pq.verifier()


def stored_ids(pq: App) -> list[str]:
    with Session(pq.engine) as session:
        return sorted(
            session.scalars(
                select(Appointment.pq_appointment_id).where(Appointment.deleted_at.is_(None))
            )
        )


def test_after_an_org_sync_the_verification_says_100_percent(
    service: SyncService, pq: App, sim: SimulatorServer
) -> None:
    assert service.sync_organization(ORG).status == "success"

    result = verifier(pq).verify(ORG)

    assert result.status == "accurate"
    assert result.accuracy == 100.0
    assert result.discrepancies == []
    assert result.compared == len(stored_ids(pq)) > 100
    assert result.requests_made >= 1
    with Session(pq.engine) as session:
        record = session.scalars(select(Verification)).one()
    assert (record.status, record.compared, record.missing, record.extra, record.stale) == (
        "accurate",
        result.compared,
        0,
        0,
        0,
    )
    assert record.organization_id == result.organization_id


def test_a_verification_names_each_discrepancy_by_id_and_field(
    service: SyncService, pq: App, sim: SimulatorServer
) -> None:
    assert service.sync_organization(ORG).status == "success"
    tampered, rescheduled, deleted_there, dropped_here = stored_ids(pq)[:4]
    with Session(pq.engine) as session, session.begin():
        session.execute(
            update(Appointment)
            .where(Appointment.pq_appointment_id == tampered)
            .values(status="cancelled", intakeq_status="Canceled")
        )
        session.execute(delete(Appointment).where(Appointment.pq_appointment_id == dropped_here))
    moved_to = sim.dataset.appointments[rescheduled].start + timedelta(hours=2)
    sim.app.store.update(rescheduled, AppointmentChanges(start=moved_to))
    sim.app.store.delete(deleted_there)

    result = verifier(pq).verify(ORG)

    assert result.status == "discrepancies"
    found = {d.appointment_id: d for d in result.discrepancies}
    assert set(found) == {tampered, rescheduled, deleted_there, dropped_here}
    assert found[tampered].kind == "stale"
    assert found[tampered].fields["status"]["stored"] == "cancelled"
    assert found[tampered].fields["intakeq_status"] == {
        "stored": "Canceled",
        "intakeq": sim.dataset.appointments[tampered].status,
    }
    assert found[rescheduled].kind == "stale"
    assert {"start_time", "end_time"} <= set(found[rescheduled].fields)
    assert found[deleted_there].kind == "extra"
    assert found[dropped_here].kind == "missing"
    assert result.accuracy == pytest.approx(100.0 * (result.compared - 4) / result.compared)
    with Session(pq.engine) as session:
        record = session.scalars(select(Verification)).one()
    assert (record.missing, record.extra, record.stale) == (1, 1, 2)
    assert {d["appointmentId"] for d in record.discrepancies} == set(found)

    # The next sync repairs what the verification found.
    service.sync_organization(ORG)
    assert verifier(pq).verify(ORG).accuracy == 100.0


def test_verify_all_compares_every_organisation_at_once(service: SyncService, pq: App) -> None:
    service.sync_nightly()

    result = verifier(pq).verify(None)

    assert (result.scope, result.status, result.accuracy) == ("all", "accurate", 100.0)
    assert result.compared == len(stored_ids(pq))


def test_an_unknown_organisation_is_refused(pq: App) -> None:
    with pytest.raises(VerifyInputError):
        verifier(pq).verify("no-such-house")
