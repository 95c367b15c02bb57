"""Did IntakeQ change while a run was reading it page by page?

IntakeQ pages by offset (100 a page, latest start first). A change during a listing that
adds an appointment to, or removes one from, the pages already read shifts the rest by one:
an appointment is then read twice or never. Only changes to the pages already read matter,
and every such change leaves a trace that two cheap listings show, judged against what the
run itself read (no clocks compared):

- `updatedSince` the day the run began: every appointment changed or created since (deleted
  ones vanish from it). One the run never read, inside its window, or one it read in
  another version (or in two versions), changed while it read.
- `deletedOnly` (with the same day): an appointment the run read live and IntakeQ lists as
  deleted was deleted while (or after) the run read it; for the incremental plan, which
  read the deleted list first, any deletion that list did not hold happened during the run.

The check runs after a plan that read the whole window or everything changed since the
last night (the window and incremental plans) when one of its listings took more than one
page; a one-page listing is one answer, consistent in itself. It costs CHECK_REQUESTS
(more only when a day's changes fill a page), counted in what Sync all promises. When
IntakeQ changed, the run ends `partial`: the next run reads the changes.

The per-patient plan reads one `client` listing per patient, mostly one page. For a
patient whose listing took more than one page, every page but the last is read again right
after it (`pages_unchanged`): a change that shifted the pages while we read them changed
what those pages hold (other appointments, or other versions). That costs the listing's
pages less one (one request for a two-page patient, whatever the practice's day), and only
that patient is `partial` when IntakeQ changed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from datetime import date, timedelta
from typing import Protocol

from pqsync.domain.windows import Window
from pqsync.intakeq.client import RequestTally
from pqsync.intakeq.errors import BudgetExhausted, IntakeQAuthError, IntakeQError
from pqsync.intakeq.models import Appointment, AppointmentQuery, MalformedRecord, version
from pqsync.services.sync.context import RunContext
from pqsync.services.sync.plan import PAGE_SIZE

# The most pages either listing may take (a busy day's changes), within the run's promise.
CHECK_PAGE_LIMIT = 20
# Our clock and IntakeQ's may differ a little: the listing starts the day this much before.
CLOCK_SLACK = timedelta(minutes=10)
# The plans whose reads cover every appointment a change could concern.
CHECKED_PLANS = frozenset({"window", "incremental", "incremental+backfill"})

CHANGED_WHILE_READING = (
    "PracticeQ changed while we were reading it (an appointment was added, moved or deleted "
    "between two pages); some appointments may be missing or out of date: run again to be sure"
)
NOT_CONFIRMED = (
    "PracticeQ could not confirm that nothing changed while we were reading it; some "
    "appointments may be missing or out of date: run again to be sure"
)

Record = Appointment | MalformedRecord


class ListingSource(Protocol):
    def counting(self) -> AbstractContextManager[RequestTally]: ...

    def appointment_pages(self, query: AppointmentQuery) -> Iterator[list[Record]]: ...


def needs_check(ctx: RunContext) -> bool:
    return (
        ctx.paged
        and not ctx.read_cut_short
        and ctx.result.plan in CHECKED_PLANS
        and ctx.result.status == "running"
    )


def check_unchanged(source: ListingSource, ctx: RunContext) -> None:
    """After the run's reads: make the run `partial` when IntakeQ changed while it read
    (or the check could not finish). Raises what ends a run (budget, key)."""
    if not needs_check(ctx):
        return
    listings = _listings(source, ctx)
    if listings is None:
        ctx.incomplete(None, NOT_CONFIRMED)
        return
    changed, deleted = listings
    moved, twice, gone = _differences(ctx, changed, deleted, ctx.seen_versions, ctx.result.window)
    if (ctx.result.plan or "").startswith("incremental"):
        # The incremental plan read IntakeQ's deleted list first: one deleted since then
        # (whether or not a later listing showed it) is not in what the run applied.
        gone += [a.id for a in deleted if a.id not in ctx.known_deleted]
    if moved or twice or gone:
        ctx.warn(
            f"PracticeQ changed while we read it: {len(set(moved + twice))} appointment(s) "
            f"changed or added, {len(set(gone))} deleted"
        )
        ctx.incomplete(None, CHANGED_WHILE_READING)


Signature = tuple[str | None, int]


def page_signature(page: list[Record]) -> list[Signature]:
    """What a page holds, in order: each record's Id and version (models.version)."""
    return [
        (r.id, version(r)) if isinstance(r, Appointment) else (r.appointment_id, hash(r.reason))
        for r in page
    ]


def pages_unchanged(
    source: ListingSource, ctx: RunContext, query: AppointmentQuery, read: list[list[Signature]]
) -> bool | None:
    """Read every page of `query` but the last again (`read`: what each page held the first
    time): whether each still holds the same appointments in the same versions. None when
    that could not be read within the run's promise (or IntakeQ failed); raises what ends
    a run (budget, key)."""
    pages = source.appointment_pages(query)
    try:
        for before in read[:-1]:
            if not ctx.may_request():
                return None
            page = next(pages, None)
            if page is None or page_signature(page) != before:
                return False
        return True
    except (BudgetExhausted, IntakeQAuthError):
        raise
    except IntakeQError as exc:
        ctx.warn(f"the check that PracticeQ did not change while we read it: {exc}")
        return None
    finally:
        close = getattr(pages, "close", None)
        if close is not None:
            close()


def _since(ctx: RunContext) -> date:
    return (ctx.started_at - CLOCK_SLACK).astimezone(ctx.practice_zone).date()


def _listings(
    source: ListingSource, ctx: RunContext
) -> tuple[list[Appointment], list[Appointment]] | None:
    """What changed and what was deleted in the practice since the run's day; None when
    either could not be read whole within the run's promise."""
    since = _since(ctx)
    try:
        changed = _read(source, ctx, AppointmentQuery(updated_since=since))
        deleted = _read(source, ctx, AppointmentQuery(updated_since=since, deleted_only=True))
    except (BudgetExhausted, IntakeQAuthError):
        raise
    except (IntakeQError, _OverBudget) as exc:
        ctx.warn(f"the check that PracticeQ did not change while we read it: {exc}")
        return None
    if changed is None or deleted is None:
        return None
    return changed, deleted


def _differences(
    ctx: RunContext,
    changed: list[Appointment],
    deleted: list[Appointment],
    read: dict[str, set[int]],
    window: Window,
) -> tuple[list[str], list[str], list[str]]:
    """Against the versions `read`: appointments changed or added in the window meanwhile,
    those read in two versions, and those read live that IntakeQ lists as deleted."""
    first, after = window.bounds(ctx.practice_zone)
    moved = [
        a.id
        for a in changed
        if (a.id in read and read[a.id] != {version(a)})
        or (a.id not in read and first <= a.start < after)
    ]
    twice = [pq_id for pq_id, versions in read.items() if len(versions) > 1]
    gone = [a.id for a in deleted if a.id in read]
    return moved, twice, gone


class _OverBudget(Exception):
    def __str__(self) -> str:
        return "the run's promised requests are spent"


def _read(
    source: ListingSource, ctx: RunContext, query: AppointmentQuery
) -> list[Appointment] | None:
    """Every appointment of a listing; None when it takes more pages than allowed. Each
    page is asked only while the run's promise has a request left."""
    found: list[Appointment] = []
    pages = source.appointment_pages(query)
    try:
        for number in range(1, CHECK_PAGE_LIMIT + 1):
            if ctx.request_promise is not None and ctx.requests_spent() >= ctx.request_promise:
                raise _OverBudget()
            page = next(pages, None)
            if page is None:
                return found
            found.extend(r for r in page if isinstance(r, Appointment))
            if len(page) < PAGE_SIZE:
                return found
            del number
        return None
    finally:
        close = getattr(pages, "close", None)
        if close is not None:
            close()
