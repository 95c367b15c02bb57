"""Choosing how a run fetches, by what pqsync knows of the practice's size.

An organisation's run either fetches the practice's whole window once and matches locally
(about ceil(A/100) requests for A appointments) or sends one `client` query per patient
(about P requests): whichever costs fewer. The practice's density (appointments a day) is
remembered from each complete window fetch; without it, the first page of a window fetch
estimates the rest. The same knowledge bounds how many pages any query may take.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import date, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pqsync.db.engine import begin_write
from pqsync.db.tables import Appointment as AppointmentRow
from pqsync.db.tables import SyncState
from pqsync.domain.windows import Window
from pqsync.intakeq.client import IntakeQPagingError
from pqsync.intakeq.models import Appointment, MalformedRecord
from pqsync.services.sync.context import CHECK_REQUESTS

PAGE_SIZE = 100
PRACTICE_DENSITY = "practice_density"
# How long a measured practice size is trusted for choosing a plan.
DENSITY_TRUSTED_FOR = timedelta(days=30)
# The shortest fetched range the practice's size is learned from.
MIN_MEASURED_DAYS = 28
# Pages a query may take when nothing is known of the practice: IntakeQ's whole day.
UNKNOWN_PRACTICE_PAGES = 500
# What one patient's appointments in a range are taken to be at least, for what a
# per-patient query costs: an intensive programme's three visits a week. What we store for
# the range counts only when it is more; it says nothing of a range we never fetched (an
# 11-year range is not a query of one page a patient).
ASSUMED_VISITS_PER_DAY = 3 / 7

Page = TypeVar("Page")


def check_requests(fetch_requests: int) -> int:
    """What the consistency check adds to a fetch of `fetch_requests`: nothing to one page
    (one answer is consistent in itself), CHECK_REQUESTS to more."""
    return CHECK_REQUESTS if fetch_requests > 1 else 0


def page_limit(expected_pages: int, *, measured: bool = True) -> int:
    """The most pages a query expected to take `expected_pages` may take before the run
    stops: twice (plus ten) what a measured size predicts. An estimate from one page is
    rough (the latest page is the sparsest), so it gets ten times, and at least a day's
    worth of IntakeQ's requests."""
    if measured:
        return 2 * expected_pages + 10
    return max(10 * expected_pages + 10, UNKNOWN_PRACTICE_PAGES)


def bounded(pages: Iterable[Page], limit: int) -> Iterator[Page]:
    """The pages, raising IntakeQPagingError past `limit` of them."""
    for number, page in enumerate(pages, start=1):
        if number > limit:
            raise IntakeQPagingError(
                "/appointments", f"more than {limit} pages, more than the practice holds"
            )
        yield page


class Planner:
    def __init__(self, clock: Callable[[], datetime], practice_zone: ZoneInfo) -> None:
        self.clock = clock
        self.practice_zone = practice_zone

    def stored_counts(
        self, session: Session, patient_ids: list[uuid.UUID], window: Window
    ) -> dict[uuid.UUID, int]:
        """Live appointments we store per patient in the window."""
        start, end = window.bounds(self.practice_zone)
        counted = session.execute(
            select(AppointmentRow.patient_id, func.count())
            .where(
                AppointmentRow.patient_id.in_(patient_ids),
                AppointmentRow.deleted_at.is_(None),
                AppointmentRow.start_time >= start,
                AppointmentRow.start_time < end,
            )
            .group_by(AppointmentRow.patient_id)
        ).all()
        return {patient_id: int(count) for patient_id, count in counted}

    def per_patient_cost(
        self, session: Session, patient_ids: list[uuid.UUID], window: Window
    ) -> int:
        """Requests for one `client` query per patient: each patient's appointments in the
        range are what we store there or ASSUMED_VISITS_PER_DAY over its days, whichever is
        more, so the cost grows with the range even where we store nothing yet. A patient
        known to hold more than a page has every page but the last read again (the check
        that IntakeQ did not change between them, consistency.py)."""
        counts = self.stored_counts(session, patient_ids, window)
        assumed = math.ceil(window.days * ASSUMED_VISITS_PER_DAY)
        pages = sum(max(counts.get(p, 0), assumed) // PAGE_SIZE + 1 for p in patient_ids)
        checks = sum(held // PAGE_SIZE for held in counts.values())
        return pages + checks

    def known_density(self, session: Session) -> float | None:
        """Appointments a day in the practice, from a complete fetch of the last 30 days."""
        state = session.get(SyncState, PRACTICE_DENSITY)
        if state is None or self.clock() - state.updated_at > DENSITY_TRUSTED_FOR:
            return None
        per_day = state.value.get("per_day")
        return float(per_day) if isinstance(per_day, int | float) else None

    def organization_requests(
        self, session: Session, patient_ids: list[uuid.UUID], window: Window
    ) -> int:
        """At most how many requests an organisation's run will take: the cheaper plan when
        the practice's size is known, else one probe page more than one query per patient
        (the probe goes on with the whole window only when that costs no more); and for a
        fetch of more than one page, the check that IntakeQ did not change while it was read
        (consistency.py). Both grow with the range, so a longer range never costs less."""
        per_patient = self.per_patient_cost(session, patient_ids, window)
        density = self.known_density(session)
        if density is None:
            fetch = per_patient + 1
        else:
            fetch = min(per_patient, self.window_cost(density, window))
        return fetch + check_requests(fetch)

    @staticmethod
    def window_cost(density: float, window: Window) -> int:
        return int(density * window.days) // PAGE_SIZE + 1

    def estimate_window_cost(
        self, first_page: list[Appointment | MalformedRecord], window: Window
    ) -> int:
        """Pages a whole-window fetch will take, judged from its first (latest) full page."""
        zone = self.practice_zone
        days = [r.start.astimezone(zone).date() for r in first_page if isinstance(r, Appointment)]
        if not days:
            return 1
        covered = max(1, (window.end - min(days)).days + 1)
        estimated = len(first_page) * window.days / covered
        return math.ceil(estimated / PAGE_SIZE) + (1 if estimated % PAGE_SIZE == 0 else 0)

    @staticmethod
    def scaled_to_window(records: int, earliest: date | None, window: Window) -> float:
        """About how many appointments the whole window holds, judged from `records` read
        from its end back to the day `earliest` (IntakeQ lists the latest first)."""
        if earliest is None or records == 0:
            return float(records)
        covered = max(1, (window.end - earliest).days + 1)
        return records * max(1.0, window.days / covered)

    def remember_density(self, session: Session, records: float, window: Window) -> None:
        """Remember the practice's size from a complete fetch of `window`; a range shorter
        than MIN_MEASURED_DAYS (a weekend's Sync all) says nothing about the practice."""
        if window.days < MIN_MEASURED_DAYS:
            return
        self.put_state(
            session,
            PRACTICE_DENSITY,
            {
                "per_day": records / window.days,
                "records": round(records),
                "window_days": window.days,
            },
        )

    def put_state(self, session: Session, name: str, value: dict[str, Any]) -> None:
        begin_write(session)
        state = session.get(SyncState, name)
        if state is None:
            session.add(SyncState(name=name, value=value, updated_at=self.clock()))
        else:
            state.value = value
            state.updated_at = self.clock()
        session.commit()
