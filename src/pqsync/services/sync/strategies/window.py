"""The window plan: the practice's whole window fetched once, page by page, and matched
locally; a complete fetch names deletion candidates, which are then proved."""

from __future__ import annotations

from collections.abc import Callable

from pqsync.intakeq.models import AppointmentQuery
from pqsync.services.sync.plan import PAGE_SIZE, bounded, page_limit
from pqsync.services.sync.strategies.base import Parts, Record, Step
from pqsync.services.sync.strategies.per_patient import PerPatient


class WindowFetch:
    plan = "window"

    def __init__(self, parts: Parts) -> None:
        self.parts = parts

    def execute(self, step: Step) -> None:
        self.window_fetch(step)

    def window_fetch(
        self, step: Step, keep_going: Callable[[list[Record]], bool] | None = None
    ) -> bool:
        """Fetch the practice's whole window; False when `keep_going` chose to stop after
        page 1. A complete fetch names deletion candidates, which are then proved."""
        session, prepared, ctx, progress = step.session, step.prepared, step.ctx, step.progress
        patient_ids = step.patient_ids
        planner, writer = self.parts.planner, self.parts.writer
        window = prepared.window
        step.all_states("running")
        step.recount()
        density = planner.known_density(session)
        session.commit()
        pages = self.parts.source.appointment_pages(
            AppointmentQuery(start_date=window.start, end_date=window.end)
        )
        try:
            first = next(pages, [])
            writer.write_page(session, ctx, first)
            records = len(first)
            progress("pages", 1, None)
            if len(first) == PAGE_SIZE:
                if keep_going is not None and not keep_going(first):
                    return False
                estimate = planner.estimate_window_cost(first, window)
                if density is not None:
                    # Never below what the first page implies: a remembered size may be
                    # stale, and a short bound fails a run that was going well.
                    about = max(planner.window_cost(density, window), estimate)
                    limit = page_limit(about)
                else:
                    about = estimate
                    limit = page_limit(estimate, measured=False)
                self._page_progress(step, 1, max(about, 2))
                rest = bounded(pages, limit - 1)
                for number, page in enumerate(rest, start=2):
                    writer.write_page(session, ctx, page)
                    records += len(page)
                    progress("pages", number, None)
                    self._page_progress(step, number, max(about, number + 1))
            else:
                self._page_progress(step, 1, 1)
        finally:
            pages.close()
        planner.remember_density(session, records, window)
        ctx.window_fetched = True
        if ctx.unidentified_malformed:
            ctx.warn("a record without an Id was skipped: deletions were not inferred this run")
        else:
            self.parts.deletions.absent_from_complete_fetch(session, ctx, patient_ids, window)
        step.all_states("done")
        progress("patients", len(patient_ids), len(patient_ids))
        return True

    @staticmethod
    def _page_progress(step: Step, done: int, about: int) -> None:
        """The window plan's pages so far in the run's record ("page 2 of about 5")."""
        step.ctx.pages_done, step.ctx.pages_about = done, about
        step.save_progress()


class ProbedWindow(WindowFetch):
    """An organisation's run when the practice's size is not known: the window's first page
    tells whether the rest costs fewer requests than one query per patient; if not, the
    run goes patient by patient (and the estimate is remembered for later runs)."""

    def __init__(self, parts: Parts, per_patient_cost: int) -> None:
        super().__init__(parts)
        self.per_patient_cost = per_patient_cost

    def execute(self, step: Step) -> None:
        planner, window = self.parts.planner, step.prepared.window

        def worth_continuing(first_page: list[Record]) -> bool:
            estimate = planner.estimate_window_cost(first_page, window)
            if estimate <= self.per_patient_cost + 1:
                return True
            # Remember the estimate so later runs choose without spending a probe.
            planner.remember_density(step.session, estimate * PAGE_SIZE, window)
            return False

        if not self.window_fetch(step, worth_continuing):
            step.ctx.result.plan = PerPatient.plan
            PerPatient(self.parts).execute(step)
