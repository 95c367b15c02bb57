"""Benchmark 1: IntakeQ requests to sync First Step House (12 patients, 90 days back and ahead).

Ours (the cheaper of window / per-patient, cold and warm) against the baseline of one
`client` query per patient (paged, as a correct per-patient sync must be), for a small
practice and for one with thousands of appointments in the window.
Target: at most min(P, ceil(A/100)) + 1 requests, P patients, A the practice's
appointments in the window.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime

from common import row, seeded_app

from intakeq_sim import (
    ManualClock,
    build_dataset,
)
from pqsync.intakeq.models import AppointmentQuery

TODAY = date(2025, 10, 24)
NOW = datetime(2025, 10, 24, 16, 0, tzinfo=UTC)
WIDTHS = (44, 10, 14, 11, 10)


def measure(label: str, dataset_kwargs: dict[str, object]) -> None:
    dataset = build_dataset(1, TODAY, **dataset_kwargs)  # type: ignore[arg-type]
    start, end = dataset.default_window()
    practice = len(dataset.appointments_in_window(start, end))
    patients = dataset.fsh_patients
    target = min(len(patients), math.ceil(practice / 100)) + 1
    with seeded_app(dataset, ManualClock(NOW)) as app:
        service = app.sync_service()
        cold = service.sync_organization("first-step-house")
        warm = service.sync_organization("first-step-house")
        client = app.intakeq
        before = client.requests_sent
        for patient in patients:
            query = AppointmentQuery(
                client=patient.directory_email or patient.email, start_date=start, end_date=end
            )
            for _page in client.appointment_pages(query):
                pass
        baseline = client.requests_sent - before
    print(
        f"\n{label}: P={len(patients)} patients, A={practice} practice appointments in "
        f"the window {start}..{end}; target min(P, ceil(A/100)) + 1 = {target}"
    )
    print(row("run", "requests", "plan", "vs target", "status", widths=WIDTHS))
    print(
        row(
            "baseline: one client query per patient",
            baseline,
            "per_patient",
            "ok" if baseline <= target else "over",
            "",
            widths=WIDTHS,
        )
    )
    for name, result in (
        ("pqsync, first run (size unknown)", cold),
        ("pqsync, later runs (size known)", warm),
    ):
        print(
            row(
                name,
                result.requests_made,
                result.plan,
                "ok" if result.requests_made <= target else "over",
                result.status,
                widths=WIDTHS,
            )
        )
        assert result.status != "failed", result.error
        for reason in result.incomplete:
            print(f"    partial: {reason}")


def main() -> None:
    print("Benchmark 1: IntakeQ requests for one First Step House sync")
    measure("small practice (the demo data)", {})
    measure(
        "large practice (6,000 appointments over +-120 days, 5% of them First Step House)",
        {"appointments": 6000, "fsh_share": 0.05},
    )
    measure(
        "intensive programme (40 patients, 8,000 appointments, 85% theirs: two pages each)",
        {"patients": 40, "appointments": 8000},
    )


if __name__ == "__main__":
    main()
