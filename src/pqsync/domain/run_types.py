"""The type a run is recorded and filtered under, from its scope and who started it."""

from __future__ import annotations

RUN_TYPES = ("manual_patient", "manual_org", "automated_daily", "webhook")


def run_type(scope: str, actor_kind: str) -> str:
    """`automated_daily` for the nightly scope or the schedule, `webhook` for IntakeQ's
    events, else `manual_org` or `manual_patient` by scope (a person or the CLI)."""
    if scope == "nightly" or actor_kind == "schedule":
        return "automated_daily"
    if actor_kind == "webhook":
        return "webhook"
    if scope == "organization":
        return "manual_org"
    return "manual_patient"
