"""Benchmark 2: IntakeQ requests of a nightly run when nothing changed in IntakeQ.

Ours (incremental: `updatedSince` from the watermark minus a day, `deletedOnly`, and the day
that entered the window's end) against the baseline of a nightly that refetches the whole
window. Target: 3 at most.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from common import row, seeded_app

from intakeq_sim import (
    ManualClock,
    build_dataset,
)

TODAY = date(2025, 10, 24)
NOW = datetime(2025, 10, 24, 9, 0, tzinfo=UTC)  # 03:00 in Denver, when the schedule runs


def measure(label: str, dataset_kwargs: dict[str, object]) -> None:
    dataset = build_dataset(1, TODAY, **dataset_kwargs)  # type: ignore[arg-type]
    clock = ManualClock(NOW)
    with seeded_app(dataset, clock) as app:
        service = app.sync_service()
        full = service.sync_nightly()  # no watermark yet: a full-window reconcile
        nights = []
        for _night in range(3):
            clock.advance(timedelta(days=1))
            nights.append(service.sync_nightly())
    print(f"\n{label}")
    print(row("run", "requests", "plan", "changes"))
    print(row("baseline: whole-window nightly", full.requests_made, full.plan, full.summary.new))
    for number, night in enumerate(nights, start=1):
        s = night.summary
        print(
            row(
                f"pqsync nightly, night {number}",
                night.requests_made,
                night.plan,
                s.new + s.updated + s.deleted,
            )
        )
    quiet = nights[-1]
    print(
        f"target: at most 3 requests when nothing changed -> night 3: {quiet.requests_made} "
        f"({'ok' if quiet.requests_made <= 3 else 'over'}). Night 1 re-reads what the "
        "simulator's seed last modified inside the one-day overlap before the watermark."
    )


def main() -> None:
    print("Benchmark 2: IntakeQ requests of a nightly run (3 quiet nights after a reconcile)")
    measure("small practice (the demo data)", {})
    measure(
        "large practice (6,000 appointments, 5% First Step House)",
        {"appointments": 6000, "fsh_share": 0.05},
    )


if __name__ == "__main__":
    main()
