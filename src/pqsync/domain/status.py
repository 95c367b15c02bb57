"""IntakeQ status -> our appointment status."""

from __future__ import annotations

STATUS_MAP: dict[str, str] = {
    "Confirmed": "confirmed",
    "WaitingConfirmation": "scheduled",
    "Canceled": "cancelled",
    "Cancelled": "cancelled",
    "Declined": "declined",
    "Missed": "no_show",
}

UNKNOWN_STATUS = "unknown"


def map_status(raw: str | None) -> str:
    """Map a raw IntakeQ status; an unknown or missing one becomes `unknown`, never dropped."""
    if raw is None:
        return UNKNOWN_STATUS
    return STATUS_MAP.get(raw.strip(), UNKNOWN_STATUS)
