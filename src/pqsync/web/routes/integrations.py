"""Callers that are not people: the nightly cron trigger and IntakeQ's webhook."""

from __future__ import annotations

from typing import cast
from zoneinfo import ZoneInfo

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from pqsync.logging import get_logger
from pqsync.services.dashboard import local_time
from pqsync.services.runs import run_by_id
from pqsync.services.sync import Actor, SyncInProgress
from pqsync.services.webhooks import patient_for_event
from pqsync.web.context import SCHEDULER, WebContext
from pqsync.web.deps import ContextDep, CronCaller, SessionDep, WebhookCaller
from pqsync.web.errors import ApiError, responses
from pqsync.web.routes.sync import (
    ACCEPTED_RESPONSE,
    PreferHeader,
    accepted,
    failure,
    in_progress,
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
# IntakeQ's webhook event types; anything else is logged as "other", since
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
    """Start the nightly sync (`Authorization: Bearer $PQSYNC_CRON_SECRET`), as the schedule
    does at 03:00 in each organisation's zone: once per organisation and local day, so a
    second call the same day answers with the run already made. Waits for the end unless
    `Prefer: respond-async`."""
    jobs = ctx.app.jobs
    try:
        started = jobs.start_nightly(Actor("schedule"))
    except SyncInProgress as exc:
        raise in_progress("every organization", exc) from None
    dashboard = ctx.dashboard(session, SCHEDULER)
    zone = dashboard.default_zone
    if started is None:
        return _already_ran(ctx, session, zone)
    service, prepared = started
    if wants_async(prefer):
        ctx.run_sync_later(prepared)
        return accepted(dashboard, prepared, ctx.app.engine, ctx.now())
    result = ctx.run_sync(service, prepared)
    if not result.ok:
        raise failure(result, zone, ctx.now())
    return NightlySyncOut(
        success=result.status == "success",
        run_id=result.run_id,
        status=cast(RunStatus, result.status),
        synced_at=local_time(result.finished_at, zone),
        patients_processed=len(result.patients),
        total_summary=SummaryOut.model_validate(result.summary),
    )


def _already_ran(ctx: WebContext, session: Session, zone: ZoneInfo) -> NightlySyncOut:
    """Today's nightly run, made earlier (by the schedule or an earlier call)."""
    run_id = ctx.app.jobs.schedule().todays_run()
    row = run_by_id(session, run_id)
    if row is None:
        raise ApiError(409, "sync_in_progress", "today's nightly sync is being started")
    return NightlySyncOut(
        success=row.status == "success",
        run_id=row.id,
        status=cast(RunStatus, row.status),
        synced_at=local_time(row.finished_at or row.started_at, zone),
        patients_processed=int((row.details or {}).get("patients_total") or 0),
        total_summary=SummaryOut(
            new=row.appointments_new,
            updated=row.appointments_updated,
            unchanged=row.appointments_unchanged,
            errors=row.appointments_errors,
        ),
        already_ran=True,
    )


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
    appointment is re-fetched from IntakeQ by id in the background (404: deleted). The event
    is stored before this answers, so a restart loses nothing accepted."""
    named = payload.Appointment
    client_id = payload.ClientId
    if client_id is None and named is not None:
        client_id = named.ClientId
    appointment_id = named.Id if named is not None else None
    if appointment_id is not None and not appointment_id.strip():
        appointment_id = None
    email = named.ClientEmail if named is not None else None
    patient_id = patient_for_event(session, client_id, appointment_id, email)
    event = payload.EventType if payload.EventType in WEBHOOK_EVENTS else "other"
    log.info("webhook.received", event_type=event, known_client=patient_id is not None)
    jobs = ctx.app.jobs
    admission = jobs.webhook_gate().admit(payload.PracticeId, patient_id, appointment_id)
    if admission.start_job:
        jobs.refetch_later(patient_id, appointment_id, admission)
    else:
        log.info("webhook.not_started", outcome=admission.outcome)
    return WebhookAccepted(accepted=True)
