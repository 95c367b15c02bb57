"""Issue 24's staff gaps at the service level, on a real database and the simulator: a run's
unknown IntakeQ clients counted as clients (with their appointments), the lists practitioner
mapping chooses from, and creating a provider (mapped at once, or refused with the field)."""

from __future__ import annotations

from collections import Counter
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from intakeq_sim import SimulatorServer
from pqsync.bootstrap import App
from pqsync.db.tables import Appointment, Provider
from pqsync.services.practitioners import (
    PractitionerError,
    create_provider,
    map_practitioner,
    practitioner_choices,
    provider_choices,
    unmatched_practitioners,
)
from pqsync.services.staff_views import run_detail
from pqsync.services.sync import SyncService

ZONE = ZoneInfo("America/Denver")


def unknown_truth(sim: SimulatorServer) -> Counter[str]:
    """The simulator's in-window appointments of clients who are no partner's patient."""
    start, end = sim.dataset.default_window()
    clients = sim.dataset.clients_by_id
    return Counter(
        str(a.client_id)
        for a in sim.dataset.appointments_in_window(start, end)
        if clients[a.client_id].organization is None
    )


def test_a_runs_unknown_clients_are_counted_as_clients_with_their_appointments(
    service: SyncService, sim: SimulatorServer, pq: App
) -> None:
    result = service.sync_organization("first-step-house")
    truth = unknown_truth(sim)
    assert len(truth) < sum(truth.values())  # several appointments per client: the case
    with Session(pq.engine) as session:
        detail = run_detail(session, str(result.run_id), ZONE)
    assert detail is not None
    unknown = detail.unknown_clients
    assert unknown.count == len(truth)
    assert {c.client_id: c.appointments for c in unknown.clients} == dict(truth)
    assert unknown.appointments == sum(truth.values()) and unknown.unnamed == 0
    counts = [c.appointments for c in unknown.clients]
    assert counts == sorted(counts, reverse=True)  # the busiest client first


def test_the_lists_hold_seen_practitioners_and_every_provider(
    service: SyncService, sim: SimulatorServer, pq: App
) -> None:
    service.sync_organization("first-step-house")
    unmapped = sim.dataset.special.unmapped_practitioner
    choices = practitioner_choices(pq.engine)
    with Session(pq.engine) as session:
        seen = set(
            session.scalars(
                select(Appointment.intakeq_practitioner_id).where(
                    Appointment.intakeq_practitioner_id.is_not(None)
                )
            )
        )
        providers = {p.email: p.name for p in session.scalars(select(Provider))}
    assert {c.practitioner_id for c in choices} >= seen
    first = choices[0]  # the unmapped come first
    assert first.practitioner_id == unmapped.id and first.provider_name is None
    assert first.name == unmapped.complete_name
    assert first.unlinked == unmatched_practitioners(pq.engine)[0].appointments > 0
    mapped = {c.practitioner_id: c.provider_name for c in choices[1:]}
    for doctor in sim.dataset.mapped_practitioners:
        if doctor.id in seen:
            assert mapped[doctor.id] == providers[doctor.email.lower()]
    assert {p.email: p.name for p in provider_choices(pq.engine)} == providers


def test_creating_a_provider_maps_the_practitioner_and_relinks_its_appointments(
    service: SyncService, sim: SimulatorServer, pq: App
) -> None:
    result = service.sync_organization("first-step-house")
    unmapped = sim.dataset.special.unmapped_practitioner
    created = create_provider(pq.engine, " Dr. Lou Locum ", "Locum@Clinic.example", unmapped.id)
    assert (created.name, created.email) == ("Dr. Lou Locum", "locum@clinic.example")
    assert created.relinked == result.unmatched_practitioners[unmapped.id]
    assert unmatched_practitioners(pq.engine) == []
    listed = {p.email: p.practitioner_id for p in provider_choices(pq.engine)}
    assert listed["locum@clinic.example"] == unmapped.id
    with Session(pq.engine) as session:
        locum = session.scalars(select(Provider).filter_by(email="locum@clinic.example")).one()
        linked = session.scalars(
            select(Appointment.provider_id).filter_by(intakeq_practitioner_id=unmapped.id)
        ).all()
    assert linked and set(linked) == {locum.id}


@pytest.mark.parametrize(
    ("name", "email", "field", "words"),
    [
        ("", "a@clinic.example", "name", "enter the provider's name"),
        ("Dr. A", "", "email", "enter the provider's email"),
        ("Dr. A", "not an email", "email", "not an email address"),
        ("Dr. A", "{taken}", "email", "already exists"),
    ],
)
def test_a_refused_provider_names_its_field_and_writes_nothing(
    pq: App, sim: SimulatorServer, name: str, email: str, field: str, words: str
) -> None:
    taken = sim.dataset.mapped_practitioners[0].email
    before = {p.email for p in provider_choices(pq.engine)}
    with pytest.raises(PractitionerError, match=words) as refused:
        create_provider(pq.engine, name, email.format(taken=taken.upper()))
    assert refused.value.field == field
    assert {p.email for p in provider_choices(pq.engine)} == before


def test_a_provider_is_not_created_when_its_practitioner_is_taken(
    service: SyncService, sim: SimulatorServer, pq: App
) -> None:
    service.sync_organization("first-step-house")
    doctor = sim.dataset.mapped_practitioners[0]
    with pytest.raises(PractitionerError, match="already mapped") as refused:
        create_provider(pq.engine, "Dr. Twin", "twin@clinic.example", doctor.id)
    assert refused.value.field == "practitioner_id"
    assert "twin@clinic.example" not in {p.email for p in provider_choices(pq.engine)}


def test_mapping_errors_name_their_field(pq: App, sim: SimulatorServer) -> None:
    unmapped = sim.dataset.special.unmapped_practitioner
    cases = [("", "x@clinic.example", "practitioner_id"), (unmapped.id, "", "provider")]
    cases.append((unmapped.id, "nobody@clinic.example", "provider"))
    for practitioner, provider, field in cases:
        with pytest.raises(PractitionerError) as refused:
            map_practitioner(pq.engine, practitioner, provider)
        assert refused.value.field == field
