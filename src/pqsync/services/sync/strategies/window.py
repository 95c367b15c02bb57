"""The window plan: the practice's whole window fetched once, page by page, and matched
locally; a complete fetch names deletion candidates, which are then proved."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from datetime import date
from zoneinfo import ZoneInfo

from pqsync.intakeq.models import Appointment, AppointmentQuery
from pqsync.services.sync.context import RunContext
from pqsync.services.sync.plan import PAGE_SIZE, bounded, page_limit
from pqsync.services.sync.strategies.base import Parts, Record, Step
from pqsync.services.sync.strategies.per_patient import PerPatient

# The most progress saves the finishing of patients makes (each writes every line).
PROGRESS_SAVES = 100


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
        page 1. A complete fetch names deletion candidates, which are then proved. A run
        that promised a number of requests stops at it: what was read is kept, and the run
        is incomplete for everyone (nobody stamped, nothing deleted)."""
        session, prepared, ctx, progress = step.session, step.prepared, step.ctx, step.progress
        patient_ids = step.patient_ids
        planner = self.parts.planner
        window = prepared.window
        step.all_states("running")
        step.recount()
        density = planner.known_density(session)
        session.commit()
        pages = self.parts.source.appointment_pages(
            AppointmentQuery(start_date=window.start, end_date=window.end)
        )
        read = _Read(self.parts.practice_zone)
        unread = 0
        try:
            first = next(pages, [])
            self._write(step, read, first)
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
                number = 1
                while ctx.may_request():
                    page = next(rest, None)
                    if page is None:
                        break
                    number += 1
                    self._write(step, read, page)
                    progress("pages", number, None)
                    self._page_progress(step, number, max(about, number + 1))
                else:
                    total = planner.scaled_to_window(read.records, read.earliest, window)
                    unread = max(1, math.ceil(total / PAGE_SIZE) - number)
            else:
                self._page_progress(step, 1, 1)
        finally:
            pages.close()
        absent: dict[str, uuid.UUID] = {}
        if unread:
            # The practice's size as far as the pages read tell, so the next estimate (and
            # promise) covers it.
            total = planner.scaled_to_window(read.records, read.earliest, window)
            planner.remember_density(session, total, window)
            self._not_read(ctx, patient_ids, unread)
        else:
            planner.remember_density(session, read.records, window)
            ctx.window_fetched = True
            if ctx.unidentified_malformed:
                ctx.warn("a record without an Id was skipped: deletions were not inferred this run")
            else:
                absent = self.parts.deletions.candidates(session, ctx, patient_ids, window)
        ctx.pages_about = ctx.pages_done  # the fetch is over
        self._finish_patients(step, absent)
        return True

    def _finish_patients(self, step: Step, absent: dict[str, uuid.UUID]) -> None:
        """Each patient in turn: what the fetch did not return re-checked by id (a 404
        deletes it), then the patient's line finished."""
        session, ctx, patient_ids = step.session, step.ctx, step.patient_ids
        theirs: dict[uuid.UUID, list[str]] = {}
        for pq_id, patient_id in absent.items():
            theirs.setdefault(patient_id, []).append(pq_id)
        total = len(patient_ids)
        every = max(1, math.ceil(total / PROGRESS_SAVES))
        for done, patient_id in enumerate(patient_ids, start=1):
            checked = theirs.pop(patient_id, [])
            if checked:
                self.parts.deletions.recheck(
                    session, ctx, checked, owners=dict.fromkeys(checked, patient_id)
                )
            ctx.results[patient_id].state = "done"
            if done % every == 0 or done == total:
                step.save_progress()
            step.progress("patients", done, total)

    def _write(self, step: Step, read: _Read, page: list[Record]) -> None:
        self.parts.writer.write_page(step.session, step.ctx, page)
        read.add(page)

    @staticmethod
    def _not_read(ctx: RunContext, patient_ids: list[uuid.UUID], unread: int) -> None:
        """The run stopped at the requests it promised: everyone's data may be incomplete."""
        pages = "1 page was" if unread == 1 else f"{unread} pages were"
        reason = (
            f"PracticeQ has more appointments than expected; {pages} not read — run Sync all again"
        )
        ctx.warn(f"the window fetch stopped at the requests the run promised; {pages} not read")
        ctx.read_cut_short = True
        ctx.incomplete(None, reason)
        for patient_id in patient_ids:
            ctx.incomplete(patient_id, reason)

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


class _Read:
    """What a window fetch has read so far: how many records, back to which day."""

    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone
        self.records = 0
        self.earliest: date | None = None

    def add(self, page: list[Record]) -> None:
        self.records += len(page)
        for record in page:
            if isinstance(record, Appointment):
                day = record.start.astimezone(self.zone).date()
                if self.earliest is None or day < self.earliest:
                    self.earliest = day
