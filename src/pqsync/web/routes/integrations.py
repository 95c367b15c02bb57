"""Callers that are not people: the nightly cron trigger and IntakeQ's webhook."""

from __future__ import annotations

import uuid
from functools import partial
from typing import cast

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import select

from pqsync.db.tables import Patient
from pqsync.logging import get_logger
from pqsync.services.dashboard import local_time
from pqsync.services.sync import Actor, SyncInProgress, SyncInputError
from pqsync.web.context import SCHEDULER, WebContext
from pqsync.web.deps import ContextDep, CronCaller, SessionDep, WebhookCaller
from pqsync.web.errors import responses
from pqsync.web.routes.sync import (
    ACCEPTED_RESPONSE,
    PreferHeader,
    accepted,
    failure,
    start_run,
    wants_async,
)
from pqsync.web.schemas import (
    NightlySyncOut,
    RunStatus,
    SummaryOut,
    WebhookAccepted,
    WebhookPayload,
)

router = APIRouter(tags=["integrations"])
# IntakeQ's event types (shared INTAKEQ_API.md); anything else is logged as "other", since
# a payload's text is not ours to write into the log.
WEBHOOK_EVENTS = frozenset(
    {
        "AppointmentCreated",
        "AppointmentConfirmed",
        "AppointmentRescheduled",
        "AppointmentCanceled",
        "AppointmentDeclined",
        "AppointmentMissed",
        "AppointmentDeleted",
    }
)
log = get_logger("pqsync.web.integrations")


@router.post(
    "/api/cron/sync-practiceq-appointments",
    dependencies=[CronCaller],
    response_model=NightlySyncOut,
    responses={**ACCEPTED_RESPONSE, **responses(401, 409, 422, 429, 502)},
)
def nightly_sync(
    ctx: ContextDep, session: SessionDep, prefer: PreferHeader = None
) -> NightlySyncOut | JSONResponse:
    """Run the nightly sync (`Authorization: Bearer $PQSYNC_CRON_SECRET`); waits for the
    end unless `Prefer: respond-async`."""
    service, prepared = start_run(
        ctx, "every organization", lambda s: s.prepare_nightly(actor=Actor("schedule"))
    )
    dashboard = ctx.dashboard(session, SCHEDULER)
    if wants_async(prefer):
        ctx.run_sync_later(service, prepared)
        return accepted(dashboard, prepared)
    result = ctx.run_sync(service, prepared)
    zone = dashboard.default_zone
    if not result.ok:
        raise failure(result, zone, ctx.now())
    return NightlySyncOut(
        success=True,
        run_id=result.run_id,
        status=cast(RunStatus, result.status),
        synced_at=local_time(result.finished_at, zone),
        patients_processed=len(result.patients),
        total_summary=SummaryOut.model_validate(result.summary),
    )


def _webhook_sync(
    ctx: WebContext, patient_id: uuid.UUID | None, appointment_id: str | None
) -> None:
    """Re-fetch the appointment by id when the event names one, else the whole patient."""
    service = ctx.sync_service()
    webhook = Actor("webhook")
    try:
        if appointment_id is not None:
            prepared = service.prepare_appointment(
                appointment_id, patient_hint=patient_id, actor=webhook
            )
        elif patient_id is not None:
            prepared = service.prepare_patient(str(patient_id), actor=webhook)
        else:
            return
    except (SyncInProgress, SyncInputError) as exc:
        # The running sync or the nightly one picks the change up.
        log.info("webhook.sync_skipped", patient_id=str(patient_id), reason=type(exc).__name__)
        return
    ctx.run_sync(service, prepared)


@router.post(
    "/api/webhooks/practiceq/appointments",
    dependencies=[WebhookCaller],
    status_code=202,
    responses=responses(400, 404, 422),
)
def appointment_webhook(
    payload: WebhookPayload, ctx: ContextDep, session: SessionDep
) -> WebhookAccepted:
    """IntakeQ's appointment events. Webhooks are not signed: the event is only a hint; the
    appointment is re-fetched from IntakeQ by id in the background (404: deleted)."""
    client_id = payload.ClientId
    if client_id is None and payload.Appointment is not None:
        client_id = payload.Appointment.ClientId
    patient_id = (
        session.scalar(select(Patient.id).where(Patient.intakeq_client_id == client_id))
        if client_id is not None
        else None
    )
    event = payload.EventType if payload.EventType in WEBHOOK_EVENTS else "other"
    log.info("webhook.received", event_type=event, known_client=patient_id is not None)
    appointment_id = payload.Appointment.Id if payload.Appointment is not None else None
    if appointment_id is not None and not appointment_id.strip():
        appointment_id = None
    if patient_id is not None or appointment_id is not None:
        ctx.background.submit(
            "webhook sync", partial(_webhook_sync, ctx, patient_id, appointment_id)
        )
    return WebhookAccepted(accepted=True)
