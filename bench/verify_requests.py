"""Benchmark 7: what `pqsync verify` costs next to an organisation sync.

For the demo practice and a large one, the same First Step House window: the IntakeQ
requests and wall time of an organisation sync (first run, and a later one) and of a
verification of that organisation and of every organisation. The baseline is the
organisation sync: a verification should cost about one window fetch, never more than a
whole-window sync of the same window.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime

from common import row, seeded_app

from intakeq_sim import ManualClock, build_dataset

TODAY = date(2025, 10, 24)
NOW = datetime(2025, 10, 24, 16, 0, tzinfo=UTC)
ORG = "first-step-house"
WIDTHS = (36, 10, 10, 26)


def measure(label: str, dataset_kwargs: dict[str, object]) -> None:
    dataset = build_dataset(1, TODAY, **dataset_kwargs)  # type: ignore[arg-type]
    start, end = dataset.default_window()
    practice = len(dataset.appointments_in_window(start, end))
    print(f"\n{label}: {practice} practice appointments in the window {start}..{end}")
    print(row("run", "requests", "seconds", "result", widths=WIDTHS))
    with seeded_app(dataset, ManualClock(NOW)) as app:
        service = app.sync_service()
        for name in ("baseline: org sync, first run", "baseline: org sync, later run"):
            began = time.perf_counter()
            synced = service.sync_organization(ORG)
            took = time.perf_counter() - began
            outcome = f"{synced.plan} plan, {synced.status}"
            print(row(name, synced.requests_made, f"{took:.2f}", outcome, widths=WIDTHS))
        verifier = app.verifier()
        for name, ref in (("pqsync verify first-step-house", ORG), ("pqsync verify --all", None)):
            began = time.perf_counter()
            result = verifier.verify(ref)
            took = time.perf_counter() - began
            print(
                row(
                    name,
                    result.requests_made,
                    f"{took:.2f}",
                    f"{result.accuracy:.1f}% of {result.compared:,}",
                    widths=WIDTHS,
                )
            )


def main() -> None:
    print("Benchmark 7: a verification's requests and time next to an organisation sync's")
    measure("small practice (the demo data)", {})
    measure(
        "large practice (6,000 appointments over +-120 days, 5% of them First Step House)",
        {"appointments": 6000, "fsh_share": 0.05},
    )


if __name__ == "__main__":
    main()
