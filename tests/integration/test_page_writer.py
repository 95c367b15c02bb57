"""A long fetch commits its pages in a writer thread while the next pages are made ready: a
page the database refuses must still end the run, with nothing of that page or after it
written."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from pqsync.bootstrap import App
from pqsync.db.tables import Appointment, PatientActivity, SyncLog
from pqsync.intakeq.models import Appointment as IntakeQAppointment
from pqsync.intakeq.models import AppointmentQuery
from pqsync.intakeq.simulator import SimulatorServer
from pqsync.services.sync import SyncService
from pqsync.services.sync_store import PageWriter, RunContext, StagedPage


def refuse_inserts_of(engine: Engine, pq_appointment_id: str) -> None:
    """A database trigger that fails any insert of this appointment (a real database error)."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(
                text(
                    "CREATE TRIGGER refuse BEFORE INSERT ON appointments "
                    f"WHEN NEW.pq_appointment_id = '{pq_appointment_id}' "
                    "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
                )
            )
            return
        conn.execute(
            text(
                "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN "
                f"IF NEW.pq_appointment_id = '{pq_appointment_id}' THEN "
                "RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$ "
                "LANGUAGE plpgsql"
            )
        )
        conn.execute(
            text(
                "CREATE TRIGGER refuse BEFORE INSERT ON appointments "
                "FOR EACH ROW EXECUTE FUNCTION refuse()"
            )
        )


# With latency, the next page is still being fetched when the refused commit ends the run.
@pytest.mark.parametrize("latency_ms", [0, 150])
def test_a_page_the_database_refuses_ends_the_run_and_nothing_from_it_on_is_written(
    service: SyncService, sim: SimulatorServer, pq: App, latency_ms: int
) -> None:
    # The window's pages as IntakeQ lists them (and as the organisation's run will fetch them).
    start, end = sim.dataset.default_window()
    pages = list(pq.intakeq.appointment_pages(AppointmentQuery(start_date=start, end_date=end)))
    assert len(pages) >= 4
    fsh = {c.client_id for c in sim.dataset.fsh_patients}
    ours = [
        {r.id for r in page if isinstance(r, IntakeQAppointment) and r.client_id in fsh}
        for page in pages
    ]
    assert all(ours[:4])
    refuse_inserts_of(pq.engine, sorted(ours[2])[0])  # one appointment of the third page
    sim.configure(latency_ms=latency_ms)

    with pytest.raises(DBAPIError, match="refused by the test"):
        service.sync_organization("first-step-house")

    with Session(pq.engine) as session:
        stored = set(session.scalars(select(Appointment.pq_appointment_id)))
        audited = session.scalar(select(func.count()).select_from(PatientActivity))
        (log,) = session.scalars(select(SyncLog)).all()
    # Page 1 was committed; the refused page was rolled back whole, with page 2 when the two
    # had queued up for one transaction, and the run stopped there: the fourth page,
    # already made ready, was never written.
    assert stored in (ours[0], ours[0] | ours[1])
    assert audited == len(stored)
    assert log.status == "failed"
    assert log.error_message is not None and log.error_message.startswith("internal error (")


def test_pages_queued_behind_a_slow_commit_share_one_transaction_and_each_counts_once(
    service: SyncService, sim: SimulatorServer, pq: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    start, end = sim.dataset.default_window()
    pages = list(pq.intakeq.appointment_pages(AppointmentQuery(start_date=start, end_date=end)))
    fsh = {c.client_id for c in sim.dataset.fsh_patients}
    ours = {
        r.id for p in pages for r in p if isinstance(r, IntakeQAppointment) and r.client_id in fsh
    }
    assert len(pages) >= 4
    store = service.store
    staged: list[StagedPage] = []
    committed: list[StagedPage] = []
    three_more_staged = threading.Event()
    stage_page, commit_page, write = store.stage_page, store.commit_page, PageWriter.write

    def counting_stage(*args: Any, **kwargs: Any) -> StagedPage:
        page = stage_page(*args, **kwargs)
        staged.append(page)
        return page

    def counting_write(writer: PageWriter, page: list[Any]) -> None:
        write(writer, page)
        if len(staged) == 5:  # page 1 (written at once), page 2 (being committed), 3, 4, 5
            three_more_staged.set()

    def slow_first_commit(session: Session, ctx: RunContext, page: StagedPage) -> None:
        if threading.current_thread().name == "pqsync-writer" and len(committed) == 1:
            # Page 2's commit is slow: the next pages queue up behind it.
            three_more_staged.wait(timeout=30)
        committed.append(page)
        commit_page(session, ctx, page)

    monkeypatch.setattr(store, "stage_page", counting_stage)
    monkeypatch.setattr(store, "commit_page", slow_first_commit)
    monkeypatch.setattr(PageWriter, "write", counting_write)
    result = service.sync_organization("first-step-house")

    assert result.status == "success", result.error
    assert three_more_staged.is_set()
    # Pages 1 and 2 alone, then pages 3 to 5 in one transaction.
    assert [len(p.items) for p in committed[2:3]] == [sum(len(p.items) for p in staged[2:5])]
    assert len(committed) < len(staged)
    with Session(pq.engine) as session:
        stored = set(session.scalars(select(Appointment.pq_appointment_id)))
        created = session.scalar(
            select(func.count())
            .select_from(PatientActivity)
            .filter_by(activity_type="appointment_created")
        )
    assert stored == ours
    assert result.summary.new == created == len(ours)
