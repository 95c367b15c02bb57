"""The activity log: one entry per appointment a run created, changed, deleted or restored,
with the field-level change, and who or what caused it."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert

from pqsync.db.tables import PatientActivity
from pqsync.domain.diff import changes_as_json, describe_changes
from pqsync.services.sync.context import RunContext


def _entry(
    ctx: RunContext,
    patient_id: uuid.UUID,
    appointment_id: uuid.UUID,
    activity_type: str,
    description: str,
    changes: dict[str, Any],
    now: datetime,
) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "patient_id": patient_id,
        "appointment_id": appointment_id,
        "sync_log_id": ctx.run_id,
        "activity_type": activity_type,
        "description": description,
        "changes": changes,
        "actor": ctx.actor.kind,
        "actor_user_id": ctx.actor.user_id,
        "created_at": now,
    }


def created(
    ctx: RunContext,
    patient_id: uuid.UUID,
    appointment_id: uuid.UUID,
    row: Mapping[str, Any],
    now: datetime,
) -> dict[str, Any]:
    """ "New appointment X on 2025-11-15 14:00 MST (confirmed, Dr. Sweeney) synced from IntakeQ"."""
    when = f"{row['start_time'].astimezone(ctx.display_zone):%Y-%m-%d %H:%M %Z}"
    provider = ctx.lookups.provider_names.get(row["provider_id"]) if row["provider_id"] else None
    details = row["status"] + (f", {provider}" if provider else "")
    return _entry(
        ctx,
        patient_id,
        appointment_id,
        "appointment_created",
        f"New appointment {row['pq_appointment_id']} on {when} ({details}) synced from IntakeQ",
        {},
        now,
    )


def changed(
    ctx: RunContext,
    patient_id: uuid.UUID,
    appointment_id: uuid.UUID,
    pq_appointment_id: str,
    changes: Mapping[str, tuple[Any, Any]],
    now: datetime,
) -> dict[str, Any]:
    """An update (or a restore, when IntakeQ lists a row we had deleted) with each change."""
    restored = "deleted_at" in changes and changes["deleted_at"][1] is None
    labels = {str(k): v for k, v in ctx.lookups.provider_names.items()}
    return _entry(
        ctx,
        patient_id,
        appointment_id,
        "appointment_restored" if restored else "appointment_updated",
        f"Appointment {pq_appointment_id} changed in IntakeQ: " + describe_changes(changes, labels),
        changes_as_json(changes),
        now,
    )


def deleted(
    ctx: RunContext,
    patient_id: uuid.UUID,
    appointment_id: uuid.UUID,
    pq_appointment_id: str,
    proof: str,
    now: datetime,
) -> dict[str, Any]:
    return _entry(
        ctx,
        patient_id,
        appointment_id,
        "appointment_deleted",
        f"Appointment {pq_appointment_id} was deleted in IntakeQ ({proof})",
        changes_as_json({"deleted_at": (None, now)}),
        now,
    )


def left(
    ctx: RunContext,
    patient_id: uuid.UUID,
    appointment_id: uuid.UUID,
    pq_appointment_id: str,
    reason: str,
    now: datetime,
) -> dict[str, Any]:
    """An appointment leaves a patient's page because IntakeQ lists it under someone else
    (named by neither name nor id: the other client may be another organisation's)."""
    return _entry(
        ctx,
        patient_id,
        appointment_id,
        "appointment_removed",
        f"Appointment {pq_appointment_id} is no longer this patient's: {reason}",
        {},
        now,
    )


def arrived(
    ctx: RunContext,
    patient_id: uuid.UUID,
    appointment_id: uuid.UUID,
    pq_appointment_id: str,
    now: datetime,
) -> dict[str, Any]:
    """An appointment IntakeQ moved to this patient from another client."""
    return _entry(
        ctx,
        patient_id,
        appointment_id,
        "appointment_moved_here",
        f"Appointment {pq_appointment_id} is now this patient's: IntakeQ lists it under them",
        {},
        now,
    )


def client_id_followed(
    ctx: RunContext, patient_id: uuid.UUID, old: int | None, new: int, now: datetime
) -> dict[str, Any]:
    """The patient's IntakeQ ClientId changed (profiles merged, a profile re-created)."""
    return {
        **_entry(
            ctx,
            patient_id,
            patient_id,
            "intakeq_client_changed",
            f"IntakeQ now lists this patient's appointments under client {new} (was {old}): "
            "their profiles were merged or re-created in IntakeQ",
            {"intakeq_client_id": {"old": old, "new": new}},
            now,
        ),
        "appointment_id": None,
    }


def record(conn: Connection, entries: list[dict[str, Any]]) -> None:
    """Insert the entries in the caller's transaction."""
    if entries:
        conn.execute(insert(PatientActivity), entries)
