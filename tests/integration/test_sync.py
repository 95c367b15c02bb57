"""The sync against a real simulator on loopback and a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from intakeq_sim import ManualClock, SimulatorServer
from pqsync.bootstrap import App
from pqsync.db.tables import (
    Affiliation,
    Appointment,
    Organization,
    Patient,
    PatientActivity,
    SyncLog,
)
from pqsync.domain.windows import Window
from pqsync.services.practitioners import map_practitioner, unmatched_practitioners
from pqsync.services.sync import SyncInputError, SyncService


def stored(engine: Engine, *, live_only: bool = True) -> dict[str, Appointment]:
    with Session(engine) as session:
        query = select(Appointment)
        if live_only:
            query = query.where(Appointment.deleted_at.is_(None))
        return {a.pq_appointment_id: a for a in session.scalars(query)}


def fsh_truth(sim: SimulatorServer) -> set[str]:
    start, end = sim.dataset.default_window()
    ids = {c.client_id for c in sim.dataset.fsh_patients}
    return {a.id for a in sim.dataset.appointments_in_window(start, end, ids)}


def snapshot(engine: Engine) -> list[tuple[Any, ...]]:
    with Session(engine) as session:
        rows = session.scalars(select(Appointment).order_by(Appointment.pq_appointment_id))
        return [tuple(getattr(a, key) for key in COLUMNS) for a in rows]


COLUMNS = [attr.key for attr in sa_inspect(Appointment).column_attrs]


def control(sim: SimulatorServer, method: str, path: str, **body: Any) -> dict[str, Any]:
    response = httpx.request(method, f"{sim.control_url}{path}", json=body or None)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def test_an_org_sync_stores_exactly_the_simulators_appointments_of_its_patients(
    service: SyncService, sim: SimulatorServer, pq: App
) -> None:
    result = service.sync_organization("first-step-house")
    truth = fsh_truth(sim)
    rows = stored(pq.engine)
    assert set(rows) == truth  # none missing (past the first 100 too), none of another client
    assert len(truth) > 200
    assert result.summary.new == len(truth)
    assert result.status == "success"
    heavy = sim.dataset.special.heavy.client_id
    assert sum(1 for a in rows.values() if a.intakeq_client_id == heavy) > 100
    impostor = sim.dataset.special.impostor.client_id
    assert all(a.intakeq_client_id != impostor for a in rows.values())


def test_a_second_sync_changes_no_row(service: SyncService, pq: App) -> None:
    first = service.sync_organization("first-step-house")
    before = snapshot(pq.engine)
    second = service.sync_organization("first-step-house")
    assert second.summary.unchanged == first.summary.new
    assert (second.summary.new, second.summary.updated, second.summary.deleted) == (0, 0, 0)
    assert snapshot(pq.engine) == before


def test_statuses_times_providers_and_services_are_mapped(
    service: SyncService, sim: SimulatorServer, pq: App
) -> None:
    service.sync_organization("first-step-house")
    rows = stored(pq.engine)
    mapping = {
        "Confirmed": "confirmed",
        "WaitingConfirmation": "scheduled",
        "Canceled": "cancelled",
        "Declined": "declined",
        "Missed": "no_show",
    }
    unmapped = sim.dataset.special.unmapped_practitioner.id
    for pq_id, row in rows.items():
        source = sim.dataset.appointments[pq_id]
        assert row.intakeq_status == source.status
        assert row.status == mapping[source.status]
        assert row.start_time == source.start
        assert row.start_time.tzinfo is not None
        assert (row.provider_id is None) == (source.practitioner_id == unmapped)
        assert row.service_id is not None
    assert {r.intakeq_status for r in rows.values()} == set(mapping)


def test_the_unmapped_practitioner_is_reported_and_mapping_relinks(
    service: SyncService, sim: SimulatorServer, pq: App
) -> None:
    result = service.sync_organization("first-step-house")
    unmapped = sim.dataset.special.unmapped_practitioner
    assert result.unmatched_practitioners.get(unmapped.id, 0) > 0
    listed = {u.practitioner_id: u for u in unmatched_practitioners(pq.engine)}
    assert listed[unmapped.id].appointments == result.unmatched_practitioners[unmapped.id]
    provider_email = sim.dataset.mapped_practitioners[0].email
    # A new provider for the practitioner: create it through the directory, then map.
    from pqsync.services.directory import DirectoryFile, import_directory

    import_directory(
        pq.engine,
        DirectoryFile.model_validate(
            {"providers": [{"email": "locum@clinic.example", "name": "Dr. Locum"}]}
        ),
    )
    relinked = map_practitioner(pq.engine, unmapped.id, "locum@clinic.example")
    assert relinked == result.unmatched_practitioners[unmapped.id]
    assert unmatched_practitioners(pq.engine) == []
    again = service.sync_organization("first-step-house")
    assert again.summary.updated == 0
    assert again.unmatched_practitioners == {}
    with pytest.raises(ValueError, match="already mapped"):
        map_practitioner(pq.engine, unmapped.id, provider_email)


def test_a_patient_sync_matches_exactly_despite_the_partial_match_filter(
    service: SyncService, sim: SimulatorServer, pq: App
) -> None:
    special = sim.dataset.special
    start, end = sim.dataset.default_window()
    ann = special.email_substring
    result = service.sync_patient(ann.directory_email or ann.email)
    truth = {a.id for a in sim.dataset.appointments_in_window(start, end, {ann.client_id})}
    rows = stored(pq.engine)
    assert set(rows) == truth
    assert result.unknown_clients > 0  # joann and the impostor came back and were skipped
    with Session(pq.engine) as session:
        patient = session.scalars(
            select(Patient).filter_by(email=(ann.directory_email or ann.email).lower())
        ).one()
        assert patient.intakeq_client_id == ann.client_id  # learned on the first match


def test_emails_differing_in_case_and_plus_addresses_match(
    service: SyncService, sim: SimulatorServer, pq: App
) -> None:
    special = sim.dataset.special
    start, end = sim.dataset.default_window()
    for client in (special.case_mismatch, special.plus_address):
        service.sync_patient(client.directory_email or client.email)
        truth = {a.id for a in sim.dataset.appointments_in_window(start, end, {client.client_id})}
        assert truth
        assert truth <= set(stored(pq.engine))


def test_the_heavy_patient_is_fetched_past_the_first_page(
    service: SyncService, sim: SimulatorServer, pq: App
) -> None:
    heavy = sim.dataset.special.heavy
    result = service.sync_patient(heavy.directory_email or heavy.email)
    assert result.summary.new > 100
    assert result.requests_made >= 2


def test_changes_in_intakeq_are_updated_and_audited(
    service: SyncService, sim: SimulatorServer, pq: App
) -> None:
    service.sync_organization("first-step-house")
    target = sorted(fsh_truth(sim))[0]
    source = sim.dataset.appointments[target]
    new_start = source.start + timedelta(days=1)
    control(
        sim,
        "PATCH",
        f"/appointments/{target}",
        StartDateIso=new_start.strftime("%Y-%m-%dT%H:%M:%S.0000000Z"),
        Status="Missed",
    )
    result = service.sync_organization("first-step-house")
    assert result.summary.updated == 1
    row = stored(pq.engine)[target]
    assert row.start_time == new_start
    assert row.status == "no_show"
    with Session(pq.engine) as session:
        entry = session.scalars(
            select(PatientActivity).filter_by(
                appointment_id=row.id, activity_type="appointment_updated"
            )
        ).one()
    assert set(entry.changes) >= {"start_time", "status", "intakeq_status"}
    assert entry.changes["status"]["new"] == "no_show"
    assert entry.actor == "cli"
    assert "status:" in entry.description


def test_deleted_appointments_are_soft_deleted_and_restored(
    service: SyncService, sim: SimulatorServer, pq: App
) -> None:
    service.sync_organization("first-step-house")
    target = sorted(fsh_truth(sim))[1]
    control(sim, "POST", f"/appointments/{target}/delete")
    deleted = service.sync_organization("first-step-house")
    assert deleted.summary.deleted == 1
    assert target not in stored(pq.engine)
    assert stored(pq.engine, live_only=False)[target].deleted_at is not None
    control(sim, "POST", f"/appointments/{target}/restore")
    restored = service.sync_organization("first-step-house")
    assert restored.summary.updated == 1
    assert target in stored(pq.engine)


def test_every_run_is_logged_and_sets_last_synced(service: SyncService, pq: App) -> None:
    result = service.sync_organization("first-step-house")
    with Session(pq.engine) as session:
        log = session.get(SyncLog, result.run_id)
        assert log is not None
        assert log.status == "success"
        assert log.appointments_new == result.summary.new
        assert log.requests_made == result.requests_made > 0
        synced = session.scalars(select(Affiliation.last_practiceq_sync_at)).all()
        assert synced and all(s == result.finished_at for s in synced)


def test_an_unreachable_intakeq_fails_the_run_and_logs_why(
    service: SyncService, sim: SimulatorServer, pq: App
) -> None:
    sim.stop()
    result = service.sync_organization("first-step-house")
    assert result.status == "failed"
    assert result.error_kind == "unreachable"
    with Session(pq.engine) as session:
        log = session.get(SyncLog, result.run_id)
        assert log is not None and log.status == "failed"
        assert log.error_message and "reach" in log.error_message
        assert session.scalar(select(func.count()).select_from(Appointment)) == 0
        assert all(s is None for s in session.scalars(select(Affiliation.last_practiceq_sync_at)))


@pytest.mark.parametrize("ref", ["nobody@example.org", "00000000-0000-0000-0000-000000000000"])
def test_an_unknown_patient_is_refused_without_writing(
    service: SyncService, pq: App, ref: str
) -> None:
    with pytest.raises(SyncInputError, match="no such patient"):
        service.sync_patient(ref)
    with Session(pq.engine) as session:
        assert session.scalar(select(func.count()).select_from(SyncLog)) == 0


def test_an_unknown_organization_is_refused(service: SyncService, pq: App) -> None:
    with pytest.raises(SyncInputError, match="no such organization: nowhere"):
        service.sync_organization("nowhere")


def test_the_pq_appointment_id_is_unique(service: SyncService, pq: App) -> None:
    service.sync_organization("first-step-house")
    row = next(iter(stored(pq.engine).values()))
    copy = {key: getattr(row, key) for key in COLUMNS if key != "id"}
    with pytest.raises(IntegrityError), Session(pq.engine) as session:
        session.add(Appointment(**copy))
        session.commit()


def test_a_narrower_window_syncs_only_that_window(
    service: SyncService, sim: SimulatorServer, pq: App
) -> None:
    start, end = sim.dataset.today, sim.dataset.today + timedelta(days=14)
    service.sync_organization("first-step-house", window=Window(start, end))
    ids = {c.client_id for c in sim.dataset.fsh_patients}
    truth = {a.id for a in sim.dataset.appointments_in_window(start, end, ids)}
    assert set(stored(pq.engine)) == truth


def test_a_nightly_run_is_incremental_after_a_full_reconcile(
    service: SyncService, sim: SimulatorServer, pq: App, clock: ManualClock
) -> None:
    first = service.sync_nightly()
    assert first.plan == "window"
    clock.advance(timedelta(days=2))
    # The first increment re-reads what IntakeQ changed within the overlap before the watermark
    # (the simulator's data was last modified on its `today`).
    assert service.sync_nightly().plan == "incremental"
    clock.advance(timedelta(days=2))
    quiet = service.sync_nightly()
    assert quiet.plan == "incremental"
    # The deleted list, what changed, and the two days that entered the window's end.
    assert quiet.requests_made == 3
    assert (quiet.summary.new, quiet.summary.updated, quiet.summary.deleted) == (0, 0, 0)
    target, gone = sorted(fsh_truth(sim))[:2]
    control(sim, "POST", f"/appointments/{target}/cancel", Reason="sick")
    control(sim, "POST", f"/appointments/{gone}/delete")
    clock.advance(timedelta(days=1))
    busy = service.sync_nightly()
    assert busy.plan == "incremental"
    assert busy.summary.updated == 1
    assert busy.summary.deleted == 1
    assert stored(pq.engine)[target].status == "cancelled"
    assert gone not in stored(pq.engine)


def test_the_nightly_reconciles_fully_when_its_watermark_is_a_week_old(
    service: SyncService, pq: App, clock: ManualClock
) -> None:
    service.sync_nightly()
    clock.advance(timedelta(days=8))
    assert service.sync_nightly().plan == "window"


def test_organizations_without_patients_sync_nothing(service: SyncService, pq: App) -> None:
    with Session(pq.engine) as session:
        session.add(Organization(slug="empty-house", name="Empty House"))
        session.commit()
    result = service.sync_organization("empty-house")
    assert result.status == "success"
    assert result.requests_made == 0


def test_a_webhook_hint_refetches_one_appointment_and_a_404_deletes_it(
    service: SyncService, sim: SimulatorServer, pq: App
) -> None:
    from pqsync.services.sync import Actor

    service.sync_organization("first-step-house")
    target = sorted(fsh_truth(sim))[2]
    moved = sim.dataset.appointments[target].start + timedelta(hours=2)
    control(
        sim,
        "PATCH",
        f"/appointments/{target}",
        StartDateIso=moved.strftime("%Y-%m-%dT%H:%M:%S.0000000Z"),
    )
    hook = Actor(kind="webhook")
    updated = service.run(service.prepare_appointment(target, actor=hook))
    assert (updated.plan, updated.requests_made, updated.summary.updated) == ("refetch", 1, 1)
    assert stored(pq.engine)[target].start_time == moved

    control(sim, "POST", f"/appointments/{target}/delete")
    deleted = service.run(service.prepare_appointment(target, actor=hook))
    assert deleted.summary.deleted == 1
    assert target not in stored(pq.engine)

    ann = sim.dataset.special.email_substring
    booked = control(
        sim,
        "POST",
        "/appointments",
        ClientId=ann.client_id,
        StartDateIso="2025-11-03T17:00:00.0000000Z",
    )
    with Session(pq.engine) as session:
        ann_id = session.scalars(
            select(Patient.id).filter_by(email=(ann.directory_email or ann.email).lower())
        ).one()
    new = service.run(service.prepare_appointment(booked["Id"], patient_hint=ann_id, actor=hook))
    assert new.summary.new == 1
    assert booked["Id"] in stored(pq.engine)
    with Session(pq.engine) as session:
        log = session.get(SyncLog, new.run_id)
        assert log is not None and log.triggered_by == "webhook"


def test_a_hint_for_an_appointment_of_nobody_is_refused(service: SyncService) -> None:
    with pytest.raises(SyncInputError, match="no such appointment"):
        service.prepare_appointment("not-ours-123")
