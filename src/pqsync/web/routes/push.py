"""Our bookings to IntakeQ (staff, and API clients with a staff token): book, cancel,
reschedule. The request is stored, sent at once, and when IntakeQ does not answer, retried
from the queue; its state is at `GET /api/appointments/pushes/{pushId}`."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse
from pydantic import Field

from pqsync.services.push import PushInputError, PushOutcome
from pqsync.services.sync import Actor
from pqsync.web.deps import ContextDep
from pqsync.web.errors import ApiError, not_found, responses
from pqsync.web.routes.admin import StaffUser
from pqsync.web.schemas import ApiModel

router = APIRouter(prefix="/api/appointments", tags=["push"])
IntakeQId = Annotated[str, Path(alias="appointmentId", max_length=64)]


class BookingIn(ApiModel):
    patient_id: uuid.UUID
    start_time: datetime = Field(description="With its offset, e.g. 2025-11-20T10:30:00-07:00")
    practitioner_id: str = Field(max_length=64, description="IntakeQ's PractitionerId")
    service_id: str = Field(max_length=64, description="IntakeQ's ServiceId")
    location_id: str = Field(max_length=64, description="IntakeQ's LocationId")
    status: str = Field("Confirmed", max_length=32)


class RescheduleIn(ApiModel):
    start_time: datetime


class CancelIn(ApiModel):
    reason: str | None = Field(None, max_length=500)


class PushOut(ApiModel):
    push_id: uuid.UUID
    kind: str
    status: str = Field(description="done | pending (IntakeQ did not answer: retried) | failed")
    intakeq_appointment_id: str | None
    attempts: int
    error: str | None


# 201: IntakeQ has it; 202: IntakeQ did not answer (retried); 502: IntakeQ refused it.
PUSH_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"model": PushOut, "description": "IntakeQ did not answer: retried from the queue"},
}


def _answer(ctx: ContextDep, outcome: PushOutcome | None, push_id: uuid.UUID) -> JSONResponse:
    if outcome is None:
        raise not_found("push")
    if outcome.status == "failed":
        raise ApiError(502, "push_refused", f"{outcome.error} (push {push_id})")
    if outcome.retry:
        ctx.app.jobs.push_later(push_id, outcome.attempts)
    body = PushOut.model_validate(outcome, from_attributes=True)
    code = 201 if outcome.status == "done" else 202
    return JSONResponse(body.model_dump(mode="json", by_alias=True), status_code=code)


def _send(ctx: ContextDep, user: StaffUser, push_id: uuid.UUID) -> JSONResponse:
    actor = Actor("user", user.user_id, user.name)
    return _answer(ctx, ctx.app.push_service().send(push_id, actor), push_id)


@router.post(
    "",
    status_code=201,
    response_model=PushOut,
    responses={**PUSH_RESPONSES, **responses(400, 401, 403, 422, 502)},
)
def book(body: BookingIn, ctx: ContextDep, user: StaffUser) -> JSONResponse:
    """Book in IntakeQ for one of our patients; 201 with IntakeQ's Id, 202 while IntakeQ
    did not answer (retried from the queue, never booked twice), 502 when it refused."""
    try:
        push_id = ctx.app.push_service().request_booking(
            body.patient_id,
            body.start_time,
            practitioner_id=body.practitioner_id,
            service_id=body.service_id,
            location_id=body.location_id,
            status=body.status,
            requested_by=user.email,
        )
    except PushInputError as exc:
        raise ApiError(422, "invalid_booking", str(exc)) from None
    return _send(ctx, user, push_id)


@router.post(
    "/{appointmentId}/cancel",
    status_code=201,
    response_model=PushOut,
    responses={**PUSH_RESPONSES, **responses(400, 401, 403, 404, 422, 502)},
)
def cancel(
    appointment_id: IntakeQId, body: CancelIn, ctx: ContextDep, user: StaffUser
) -> JSONResponse:
    """Cancel in IntakeQ an appointment we store (by IntakeQ's Id)."""
    try:
        push_id = ctx.app.push_service().request_change(
            "cancel", appointment_id, reason=body.reason, requested_by=user.email
        )
    except PushInputError as exc:
        raise not_found("appointment") from exc
    return _send(ctx, user, push_id)


@router.post(
    "/{appointmentId}/reschedule",
    status_code=201,
    response_model=PushOut,
    responses={**PUSH_RESPONSES, **responses(400, 401, 403, 404, 422, 502)},
)
def reschedule(
    appointment_id: IntakeQId, body: RescheduleIn, ctx: ContextDep, user: StaffUser
) -> JSONResponse:
    """Move in IntakeQ an appointment we store (by IntakeQ's Id) to a new start."""
    try:
        push_id = ctx.app.push_service().request_change(
            "reschedule", appointment_id, start=body.start_time, requested_by=user.email
        )
    except PushInputError as exc:
        if "no such" in str(exc):
            raise not_found("appointment") from exc
        raise ApiError(422, "invalid_reschedule", str(exc)) from None
    return _send(ctx, user, push_id)


@router.get("/pushes/{pushId}", responses=responses(401, 403, 404, 422))
def push_state(
    push_id: Annotated[uuid.UUID, Path(alias="pushId")], ctx: ContextDep, _user: StaffUser
) -> PushOut:
    """A push's state: done, pending (and why), failed (and why)."""
    outcome = ctx.app.push_service().outcome(push_id)
    if outcome is None:
        raise not_found("push")
    return PushOut.model_validate(outcome, from_attributes=True)
