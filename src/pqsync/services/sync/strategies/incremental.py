"""The nightly run's incremental plan, and what the nightly runs remember between nights.

A whole-window fetch (the window plan, a reconcile) on the first night, when the watermark
is a week old, when the window last covered is not known, and once every RECONCILE_AFTER
whatever the watermark says; otherwise what changed since the last run, the days new to the
window since it was last covered (date-only, every patient: bookings there that nobody
edited since never come back as changed), then a full fetch (backfill) of every patient the
last run did not make complete: newly affiliated, email or ClientId changed, or incomplete
last night.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from pqsync.db.tables import Affiliation, SyncState
from pqsync.domain.windows import Window, new_days
from pqsync.intakeq.errors import (
    BudgetExhausted,
    IntakeQAuthError,
    IntakeQError,
    IntakeQUnreachable,
)
from pqsync.intakeq.models import Appointment, AppointmentQuery, MalformedRecord
from pqsync.services.sync.context import RunContext
from pqsync.services.sync.plan import UNKNOWN_PRACTICE_PAGES, Planner, bounded, page_limit
from pqsync.services.sync.results import PreparedRun
from pqsync.services.sync.strategies.base import Parts, Step
from pqsync.services.sync.strategies.per_patient import PerPatient
from pqsync.services.sync.strategies.window import WindowFetch

NIGHTLY_WATERMARK = "nightly_watermark"
NIGHTLY_RECONCILED = "nightly_reconciled"
# The window (start and end dates) the nightly runs last made complete.
NIGHTLY_COVERED = "nightly_covered"
# A full-window reconcile replaces the incremental run when the watermark is this old, and
# in any case once this long after the last one (whatever the watermark says).
RECONCILE_AFTER = timedelta(days=7)
# `updatedSince` is date-only: go back a whole day more so the boundary is never missed.
WATERMARK_OVERLAP = timedelta(days=1)


@dataclass(frozen=True)
class NightlyState:
    """What the nightly runs remember: the last run's start (the watermark), the last
    reconcile's, and the window they last made complete."""

    watermark: datetime | None
    reconciled: datetime | None
    covered: Window | None

    @classmethod
    def load(cls, session: Session) -> NightlyState:
        return cls(
            watermark=_moment(session.get(SyncState, NIGHTLY_WATERMARK)),
            reconciled=_moment(session.get(SyncState, NIGHTLY_RECONCILED)),
            covered=_covered(session.get(SyncState, NIGHTLY_COVERED)),
        )

    def incremental_since(self, started: datetime) -> tuple[datetime, Window] | None:
        """The watermark and the window last covered when a run starting at `started` may
        fetch only what changed; None when it reconciles (fetches the whole window)."""
        if (
            self.watermark is None
            or started - self.watermark > RECONCILE_AFTER
            or self.reconciled is None
            or started - self.reconciled >= RECONCILE_AFTER
            or self.covered is None
        ):
            return None
        return self.watermark, self.covered


def remember_night(
    planner: Planner, session: Session, prepared: PreparedRun, ctx: RunContext
) -> None:
    """After a nightly run that did not fail: its start is the next watermark (a partial
    run's too: the patients it left incomplete are not stamped, and the next night's
    backfill fetches them whole), a reconcile's too, and the window it made complete."""
    at = {"at": prepared.started_at.isoformat()}
    planner.put_state(session, NIGHTLY_WATERMARK, at)
    if ctx.window_fetched:
        planner.put_state(session, NIGHTLY_RECONCILED, at)
    if ctx.window_fetched or ctx.new_days_fetched:
        window = prepared.window
        covered = {"start": window.start.isoformat(), "end": window.end.isoformat()}
        planner.put_state(session, NIGHTLY_COVERED, covered)


class Incremental:
    plan = "incremental"

    def __init__(self, parts: Parts, watermark: datetime, covered: Window) -> None:
        self.parts = parts
        self.watermark = watermark
        self.covered = covered

    def execute(self, step: Step) -> None:
        session, prepared, ctx, progress = step.session, step.prepared, step.ctx, step.progress
        planner, writer = self.parts.planner, self.parts.writer
        watermark, covered = self.watermark, self.covered
        density = planner.known_density(session)
        session.commit()
        step.all_states("running")
        step.recount()
        limit = (
            page_limit(planner.window_cost(density, prepared.window))
            if density is not None
            else UNKNOWN_PRACTICE_PAGES
        )
        deleted_ids: list[str] = []
        for page in bounded(
            self.parts.source.appointment_pages(AppointmentQuery(deleted_only=True)), limit
        ):
            deleted_ids.extend(r.id for r in page if isinstance(r, Appointment))
            ctx.result.malformed += sum(1 for r in page if isinstance(r, MalformedRecord))
        self.parts.deletions.soft_delete(session, ctx, deleted_ids, "listed as deleted by IntakeQ")
        since = (watermark - WATERMARK_OVERLAP).astimezone(self.parts.practice_zone).date()
        changed = self.parts.source.appointment_pages(AppointmentQuery(updated_since=since))
        for number, page in enumerate(bounded(changed, limit), start=1):
            writer.write_page(session, ctx, page)
            progress("pages", number, None)
        step.all_states("done")
        behind = self._not_synced_since(session, step.patient_ids, watermark)
        session.commit()  # end the read before the next pages' writes
        if behind:
            per_patient = planner.per_patient_cost(session, behind, prepared.window)
            session.commit()
            window_cost = (
                planner.window_cost(density, prepared.window) if density is not None else None
            )
            if window_cost is not None and window_cost < per_patient:
                ctx.result.plan = WindowFetch.plan
                WindowFetch(self.parts).execute(step)
                return
        self._fetch_new_days(session, ctx, new_days(covered, prepared.window), density)
        if not behind:
            return
        ctx.result.plan = "incremental+backfill"
        for patient_id in behind:
            ctx.results[patient_id].state = "pending"
        PerPatient(self.parts).execute(replace(step, patient_ids=behind))

    def _fetch_new_days(
        self,
        session: Session,
        ctx: RunContext,
        ranges: list[Window],
        density: float | None,
    ) -> None:
        """Fetch every appointment (every patient, all pages) on the days new to the window.
        Absence proves nothing here (IntakeQ's deleted list and the reconcile judge it). An
        incomplete fetch makes the run partial; the next night asks for those days again."""
        planner = self.parts.planner
        try:
            for days in ranges:
                limit = (
                    page_limit(planner.window_cost(density, days))
                    if density is not None
                    else UNKNOWN_PRACTICE_PAGES
                )
                query = AppointmentQuery(start_date=days.start, end_date=days.end)
                for page in bounded(self.parts.source.appointment_pages(query), limit):
                    self.parts.writer.write_page(session, ctx, page)
        except (BudgetExhausted, IntakeQAuthError, IntakeQUnreachable):
            raise
        except IntakeQError as exc:
            session.rollback()
            first, last = min(r.start for r in ranges), max(r.end for r in ranges)
            ctx.warn(f"the days new to the window ({first} to {last}): {exc}")
            ctx.incomplete(
                None,
                f"IntakeQ's appointments on the days new to the sync window ({first} to "
                f"{last}) could not all be fetched; bookings on those days may be missing "
                "until the next nightly run",
            )
            return
        ctx.new_days_fetched = True

    @staticmethod
    def _not_synced_since(
        session: Session, patient_ids: list[uuid.UUID], watermark: datetime
    ) -> list[uuid.UUID]:
        """The patients with an affiliation never stamped, or not stamped by the last
        nightly run (whose start is the watermark): their data needs a full fetch."""
        behind = set(
            session.scalars(
                select(Affiliation.patient_id).where(
                    or_(
                        Affiliation.last_practiceq_sync_at.is_(None),
                        Affiliation.last_practiceq_sync_at < watermark,
                    )
                )
            )
        )
        return [p for p in patient_ids if p in behind]


def _covered(state: SyncState | None) -> Window | None:
    """The window the nightly runs last made complete (the reconcile's, moved on by each
    incremental run that fetched its new days)."""
    if state is None:
        return None
    try:
        return Window(
            date.fromisoformat(str(state.value["start"])),
            date.fromisoformat(str(state.value["end"])),
        )
    except (KeyError, ValueError):
        return None


def _moment(state: SyncState | None) -> datetime | None:
    if state is None:
        return None
    value = state.value.get("at")
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else None
