"""The field-level difference between a stored appointment and IntakeQ's version."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

# Every column IntakeQ's record sets: a change to any of them is written and audited.
TRACKED_FIELDS = (
    "patient_id",
    "status",
    "intakeq_status",
    "start_time",
    "end_time",
    "provider_id",
    "intakeq_practitioner_id",
    "service_id",
    "location_name",
    "intakeq_client_id",
    "intakeq_last_modified",
    "metadata",
    "deleted_at",
)
METADATA = "metadata"


def _comparable(value: Any) -> Any:
    if isinstance(value, datetime):
        # Compare instants, not representations (SQLite drops microseconds' zone).
        return value.timestamp()
    return value


def appointment_changes(
    stored: Mapping[str, Any], incoming: Mapping[str, Any]
) -> dict[str, tuple[Any, Any]]:
    """Tracked fields whose value differs: {field: (old, new)}. Empty means unchanged."""
    changes: dict[str, tuple[Any, Any]] = {}
    for name in TRACKED_FIELDS:
        if name not in incoming:
            continue
        old, new = stored.get(name), incoming[name]
        if name == METADATA:
            changes.update(_metadata_changes(old or {}, new or {}))
        elif _comparable(old) != _comparable(new):
            changes[name] = (old, new)
    return changes


def _metadata_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The other fields IntakeQ sends (practitioner name, cancellation reason...), per key."""
    return {
        f"{METADATA}.{key}": (old.get(key), new.get(key))
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    }


def jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def changes_as_json(changes: Mapping[str, tuple[Any, Any]]) -> dict[str, dict[str, Any]]:
    return {k: {"old": jsonable(old), "new": jsonable(new)} for k, (old, new) in changes.items()}


def describe_changes(changes: Mapping[str, tuple[Any, Any]], labels: Mapping[str, str]) -> str:
    """One human line: `status: scheduled -> confirmed; start_time: ... -> ...`.

    `labels` turns ids into names (provider ids into provider names) for the reader.
    """
    parts = []
    for name, (old, new) in changes.items():
        old_text = labels.get(str(old), jsonable(old)) if old is not None else "none"
        new_text = labels.get(str(new), jsonable(new)) if new is not None else "none"
        parts.append(f"{name}: {old_text} -> {new_text}")
    return "; ".join(parts)
