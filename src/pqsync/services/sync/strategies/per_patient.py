"""The per-patient plan: one exact-filtered `client` query per patient, one patient after
another; one failing patient fails alone."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from pqsync.domain.windows import Window
from pqsync.intakeq.errors import IntakeQError
from pqsync.intakeq.models import AppointmentQuery
from pqsync.services.sync import consistency
from pqsync.services.sync import records as sync_records
from pqsync.services.sync.context import RunContext
from pqsync.services.sync.plan import PAGE_SIZE, bounded, page_limit
from pqsync.services.sync.strategies.base import RUN_ENDING, Parts, Promised, Step

# Why a patient is incomplete when the run stopped at the requests it promised.
NOT_READ = (
    "PracticeQ has more appointments than expected; this patient's were not all read — "
    "run Sync all again"
)

# A patient's sync that found nothing because IntakeQ knows no one by their email.
UNKNOWN_TO_INTAKEQ = (
    "PracticeQ has no client with this patient's email; check the email in PracticeQ and "
    "in the directory"
)


@dataclass
class Listing:
    """One patient's `client` listing as read: how many of its records were the patient's
    (None: the run's promised requests ran out before its last page), and what each page
    held (see consistency.page_signature)."""

    query: AppointmentQuery
    own: int | None = None
    pages: list[list[consistency.Signature]] = field(default_factory=list)


class PerPatient:
    plan = "per_patient"

    def __init__(self, parts: Parts) -> None:
        self.parts = parts

    def execute(self, step: Step) -> None:
        """One exact-filtered `client` query per patient; one failing patient fails alone."""
        session, prepared, ctx, progress = step.session, step.prepared, step.ctx, step.progress
        patient_ids = step.patient_ids
        window = prepared.window
        ctx.pages_done, ctx.pages_about = 0, None  # a window probe's page is not progress
        for result in ctx.results.values():
            if result.state == "running":  # left so by a window probe: queued again
                result.state = "pending"
        stored = self.parts.planner.stored_counts(session, patient_ids, window)
        session.commit()
        for done, patient_id in enumerate(patient_ids):
            result = ctx.results[patient_id]
            if result.state == "done":
                continue
            result.state = "running"
            step.save_progress()
            held = stored.get(patient_id, 0)
            try:
                email = ctx.identity.email_of(patient_id)
                # Each patient's listing is its own: one that pages keeps requests back for
                # its check, right after it (consistency.pages_unchanged).
                ctx.paged = False
                listing = self.fetch_patient(session, ctx, patient_id, email, window, held)
                own = listing.own
                if own is None:
                    # The run reached the requests it promised: what was read is kept.
                    ctx.read_cut_short = True
                    ctx.incomplete(patient_id, NOT_READ)
                elif len(listing.pages) > 1 and self.changed_while_read(
                    session, ctx, patient_id, listing
                ):
                    pass  # partial, with the reason; absence proves nothing, nothing deleted
                elif own == 0 and (held > 0 or self.email_moved(session, ctx, patient_id)):
                    # None of the patient's own came back (their email may have changed in
                    # IntakeQ, and `client=` matched others): absence proves nothing. With
                    # nothing stored, it proves nothing either when their known ClientId no
                    # longer carries their email.
                    ctx.warn(
                        f"patient {patient_id}: the fetch is incomplete: IntakeQ returned none "
                        "of the patient's appointments for their email (has it changed in "
                        "IntakeQ?); nothing was deleted"
                    )
                    ctx.incomplete(
                        patient_id,
                        "IntakeQ returned none of this patient's appointments for their "
                        "email; they may be out of date (check the email in IntakeQ and in "
                        "the directory)",
                    )
                elif own == 0 and held == 0 and self.unknown_to_intakeq(session, ctx, patient_id):
                    # Nothing came back because IntakeQ knows no one by this email: not
                    # "synced, nothing new" but a patient to look up (a typo, another email).
                    ctx.warn(f"patient {patient_id}: IntakeQ has no client with their email")
                    ctx.incomplete(patient_id, UNKNOWN_TO_INTAKEQ)
                elif ctx.unidentified_malformed:
                    ctx.warn(f"patient {patient_id}: a record without an Id: nothing deleted")
                else:
                    self.parts.deletions.absent_from_complete_fetch(
                        session, ctx, [patient_id], window
                    )
            except RUN_ENDING as exc:
                result.state = "failed"
                result.error_kind = sync_records.error_kind(exc)
                raise
            except IntakeQError as exc:
                session.rollback()
                result.state = "failed"
                result.error = str(exc)
                result.error_kind = sync_records.error_kind(exc)
                result.summary.errors += 1
                ctx.warn(f"patient {patient_id}: {exc}")
                progress("patients", done + 1, len(patient_ids))
                continue
            result.state = "done"
            progress("patients", done + 1, len(patient_ids))

    def changed_while_read(
        self, session: Session, ctx: RunContext, patient_id: uuid.UUID, listing: Listing
    ) -> bool:
        """Whether IntakeQ changed the patient's listing between its pages, or that could not
        be confirmed (its pages but the last read again, outside any write transaction): the
        patient is then `partial`."""
        session.commit()
        ctx.paged = False  # the requests kept back for this check are spent now
        unchanged = consistency.pages_unchanged(
            self.parts.source, ctx, listing.query, listing.pages
        )
        if unchanged:
            return False
        if unchanged is None:
            ctx.incomplete(patient_id, consistency.NOT_CONFIRMED)
            return True
        ctx.warn(
            f"patient {patient_id}: PracticeQ changed while we read their appointments "
            "(between two pages); nothing deleted"
        )
        ctx.incomplete(patient_id, consistency.CHANGED_WHILE_READING)
        return True

    @staticmethod
    def email_moved(session: Session, ctx: RunContext, patient_id: uuid.UUID) -> bool:
        """Whether the patient's known ClientId no longer carries their email in IntakeQ
        (asked outside any write transaction; an IntakeQ error leaves it possible)."""
        session.commit()
        try:
            return ctx.identity.email_left_client(patient_id)
        except RUN_ENDING:
            raise
        except IntakeQError:
            return True

    @staticmethod
    def unknown_to_intakeq(session: Session, ctx: RunContext, patient_id: uuid.UUID) -> bool:
        """Whether IntakeQ has no client with the patient's email (one question, asked
        outside any write transaction; an IntakeQ error leaves it unsaid)."""
        session.commit()
        try:
            return ctx.identity.unknown_to_intakeq(patient_id)
        except RUN_ENDING:
            raise
        except IntakeQError:
            return False

    def fetch_patient(
        self,
        session: Session,
        ctx: RunContext,
        patient_id: uuid.UUID,
        email: str,
        window: Window,
        held: int,
    ) -> Listing:
        """Write the patient's `client` query: what it read (see Listing)."""
        summary = ctx.results[patient_id].summary
        before = summary.new + summary.updated + summary.unchanged
        query = AppointmentQuery(client=email, start_date=window.start, end_date=window.end)
        limit = page_limit(held // PAGE_SIZE + 1)
        pages = self.parts.source.appointment_pages(query)
        listing = Listing(query)
        try:
            within = Promised(ctx, bounded(pages, limit))
            for page in within:
                listing.pages.append(consistency.page_signature(page))
                self.parts.writer.write_page(session, ctx, page, only_patient=patient_id)
        finally:
            pages.close()
        if not within.cut:
            listing.own = summary.new + summary.updated + summary.unchanged - before
        return listing
