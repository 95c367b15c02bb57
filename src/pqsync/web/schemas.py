"""The JSON the HTTP API takes and returns (camelCase on the wire, as in the proposal)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

RunStatus = Literal["running", "success", "partial", "failed", "paused"]
RunScope = Literal["patient", "organization", "nightly"]
PatientState = Literal["pending", "running", "done", "failed"]
ErrorKind = str  # unreachable | budget | auth | intakeq | lease | internal
SyncAction = Literal["new", "updated", "unchanged", "deleted"]
ConsentStatus = Literal["active", "expired", "revoked", "missing"]

LocalTime = datetime  # always with the organisation's offset, e.g. 2025-11-15T14:00:00-07:00


class ApiModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, from_attributes=True)


# -- errors -------------------------------------------------------------------------------


class ErrorDetail(ApiModel):
    code: str = Field(examples=["not_found"])
    message: str = Field(examples=["no such patient"])
    run_id: uuid.UUID | None = Field(
        None, description="The run concerned: the running one (409) or the failed one (429, 502)."
    )
    retry_at: datetime | None = Field(None, description="When to try again (429).")


class ErrorResponse(ApiModel):
    error: ErrorDetail


# -- auth ---------------------------------------------------------------------------------


# PostgreSQL text cannot hold NUL: such input is refused here rather than failing there.
NO_NUL = r"^[^\x00]*$"


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(
        min_length=1, max_length=320, pattern=NO_NUL, examples=["beth@firststephouse.org"]
    )
    password: str = Field(min_length=1, max_length=1024)


class UserOut(ApiModel):
    id: uuid.UUID
    email: str
    name: str
    role: str = Field(examples=["case_manager"])
    organization_id: uuid.UUID | None
    organization_name: str | None


class SessionOut(ApiModel):
    user: UserOut
    csrf_token: str | None = Field(
        description="Send as X-CSRF-Token on cookie-authenticated POST requests; "
        "null for bearer tokens."
    )


# -- syncs --------------------------------------------------------------------------------


class DateRange(ApiModel):
    model_config = ConfigDict(extra="forbid")

    start_date: str = Field(examples=["2025-11-01"], json_schema_extra={"format": "date"})
    end_date: str = Field(examples=["2025-12-31"], json_schema_extra={"format": "date"})


class SyncRequest(ApiModel):
    model_config = ConfigDict(extra="forbid")

    date_range: DateRange | None = Field(
        None,
        description="Local calendar dates, inclusive, at most 400 days; default: the "
        "organisation's window (90 days back to 90 days ahead).",
    )


class SummaryOut(ApiModel):
    new: int
    updated: int
    unchanged: int
    errors: int


class SyncedAppointmentOut(ApiModel):
    id: uuid.UUID = Field(description="Our appointment id.")
    pq_appointment_id: str
    start_time: LocalTime
    provider_name: str | None
    status: str
    sync_action: SyncAction


HIDDEN_COUNTS = (
    "Null for a partner while the patient's ROI consent with the partner's organisation is "
    "not active: they see that a sync happened and whether it succeeded, not its counts."
)


class PatientSyncOut(ApiModel):
    success: bool
    patient_id: uuid.UUID
    patient_name: str
    synced_at: LocalTime
    summary: SummaryOut | None = Field(description=HIDDEN_COUNTS)
    appointments: list[SyncedAppointmentOut] = Field(
        description="Empty for a partner while the patient's ROI consent is not active."
    )
    incomplete: list[str] = Field(
        default_factory=list,
        description="Only with success false: why the patient's data may be out of date, in "
        "plain words (e.g. PracticeQ has no client with the patient's email). Left out of a "
        "complete answer, which is the proposal's shape exactly.",
    )


class PatientResultOut(ApiModel):
    patient_id: uuid.UUID
    patient_name: str
    success: bool
    summary: SummaryOut | None = Field(description=HIDDEN_COUNTS)
    error: str | None


class OrganizationSyncOut(ApiModel):
    success: bool
    organization_id: uuid.UUID
    organization_name: str
    synced_at: LocalTime
    patients_processed: int
    total_summary: SummaryOut = Field(
        description="For a partner: totals over the patients whose ROI consent is active."
    )
    patient_results: list[PatientResultOut]


class NightlySyncOut(ApiModel):
    success: bool
    run_id: uuid.UUID
    status: RunStatus
    synced_at: LocalTime
    patients_processed: int
    total_summary: SummaryOut
    # True when today's nightly run had already been made: this is that run.
    already_ran: bool = False


class RunPatientOut(ApiModel):
    patient_id: uuid.UUID
    patient_name: str
    state: PatientState
    summary: SummaryOut | None = Field(description=HIDDEN_COUNTS)
    error_kind: ErrorKind | None = Field(
        default=None, description="Why this patient's sync failed, when it did."
    )
    incomplete: list[str] = Field(
        default_factory=list,
        description="Why this patient's appointments may be out of date after the run.",
    )


class SyncRunOut(ApiModel):
    run_id: uuid.UUID
    scope: RunScope
    status: RunStatus
    triggered_by: str
    organization_id: uuid.UUID | None
    organization_name: str | None
    started_at: LocalTime
    finished_at: LocalTime | None
    patients_total: int
    patients_done: int
    summary: SummaryOut = Field(
        description="For a partner: totals over the patients whose ROI consent is active."
    )
    patients: list[RunPatientOut]
    error: str | None
    error_kind: ErrorKind | None = Field(default=None, description="Why the run stopped.")
    plan: str | None = Field(
        default=None, description="window | per_patient | incremental | refetch, once chosen."
    )
    pages_done: int = Field(default=0, description="The window plan's pages fetched so far.")
    pages_about: int | None = Field(
        default=None, description="About how many pages the window plan fetches."
    )
    percent: int = Field(default=0, ge=0, le=100, description="How far the run is.")
    waiting_seconds: int | None = Field(
        default=None, description="Waiting for IntakeQ's request limit: about this long."
    )
    waiting_reason: str | None = Field(
        default=None, description="minute_limit (our count of its limit) | rate_limited (429)."
    )
    incomplete: list[str] = Field(
        default_factory=list,
        description="Why a `partial` run is partial, in words a person can act on.",
    )
    waiting: str | None = Field(
        None, description="Why a run that has not started is not moving (no worker running)."
    )


# -- dashboard ----------------------------------------------------------------------------


class PatientRefOut(ApiModel):
    id: uuid.UUID
    name: str


class HistoryEntryOut(ApiModel):
    synced_at: LocalTime
    triggered_by: str = Field(examples=["Beth Rodriguez", "nightly schedule", "webhook"])
    summary: SummaryOut | None = Field(description=HIDDEN_COUNTS)


class SyncHistoryOut(ApiModel):
    patient: PatientRefOut
    last_sync: LocalTime | None
    history: list[HistoryEntryOut]


class ConsentOut(ApiModel):
    status: ConsentStatus
    expires_on: date | None
    active: bool
    message: str | None = Field(examples=["ROI consent required"])


class NextAppointmentOut(ApiModel):
    start_time: LocalTime
    provider_name: str | None
    status: str


class RosterEntryOut(ApiModel):
    id: uuid.UUID
    name: str
    organization_id: uuid.UUID
    organization_name: str
    roi_consent: ConsentOut
    next_appointment: NextAppointmentOut | None = Field(
        description="Null when there is none, or for a partner while consent is not active."
    )
    last_synced_at: LocalTime | None


class RosterOut(ApiModel):
    patients: list[RosterEntryOut]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )


class SyncPlanOut(ApiModel):
    organization_id: uuid.UUID
    organization_name: str
    patients: int
    start_date: str = Field(description="The default date range's first day.")
    end_date: str
    max_requests: int = Field(
        description="IntakeQ requests at most, by the plan the run will choose (the whole "
        "window or one query per patient, whichever is cheaper)."
    )
    estimated_minutes: int = Field(description="At the minute limit, for max_requests.")
    requests_left_today: int
    daily_limit: int


class AppointmentOut(ApiModel):
    id: uuid.UUID
    pq_appointment_id: str
    start_time: LocalTime
    end_time: LocalTime | None
    provider_name: str | None
    status: str
    location_name: str | None
    last_synced_at: LocalTime | None


class AppointmentsOut(ApiModel):
    patient: PatientRefOut
    appointments: list[AppointmentOut]


# -- integrations and operations ----------------------------------------------------------


# IntakeQ's client ids are positive and fit the BIGINT column they are looked up in.
IntakeQClientId = Annotated[int, Field(ge=1, le=2**63 - 1)]


class WebhookAppointment(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    Id: str | None = None
    ClientId: IntakeQClientId | None = None
    ClientEmail: str | None = Field(None, max_length=320)


class WebhookPayload(BaseModel):
    """IntakeQ's appointment webhook; only a hint of which client to re-fetch."""

    model_config = ConfigDict(extra="allow", strict=True)

    EventType: str = Field(max_length=100, examples=["AppointmentCreated"])
    ActionPerformedByClient: bool | None = None
    Appointment: WebhookAppointment | None = None
    ClientId: IntakeQClientId | None = None
    PracticeId: str | int | None = None


class ChangesOut(ApiModel):
    mark: str = Field(description="Differs whenever something shown changed; compare only.")


class WebhookAccepted(ApiModel):
    accepted: bool


RunType = Literal["manual_patient", "manual_org", "automated_daily", "webhook"]


class RunListEntryOut(ApiModel):
    run_id: uuid.UUID
    type: RunType | None
    scope: str
    status: str
    triggered_by: str
    organization_name: str | None
    started_at: LocalTime
    duration_seconds: float | None
    new: int
    updated: int
    unchanged: int
    deleted: int
    errors: int
    requests_made: int
    error: str | None


class RunListOut(ApiModel):
    runs: list[RunListEntryOut]


class AlertOut(ApiModel):
    kind: Literal["failure", "recovery", "missed"]
    subject: str
    body: str
    delivery: Literal["email", "log", "retrying", "failed", "cancelled"] = Field(
        description="email: delivered; log: no mail set up; retrying: the mail server "
        "refused, tried again with backoff; failed: given up; cancelled: it worked again "
        "before the mail could go out."
    )
    run_id: uuid.UUID | None
    created_at: LocalTime


class AlertsOut(ApiModel):
    alerts: list[AlertOut]


class WorkerHealthOut(ApiModel):
    alive: bool = Field(description="A queue worker was seen within `seenWithinSeconds`.")
    last_seen_at: datetime | None
    seen_within_seconds: int


class OrganizationHealthOut(ApiModel):
    slug: str
    last_successful_sync_at: datetime | None


class HealthOut(ApiModel):
    """Up or down for anyone; the details only for staff or the metrics token."""

    status: Literal["ok", "down"]
    database: Literal["ok", "down"] | None = None
    worker: WorkerHealthOut | None = None
    queue_depth: int | None = None
    organizations: list[OrganizationHealthOut] | None = None


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    detail = ErrorDetail(code=code, message=message, **extra)
    return ErrorResponse(error=detail).model_dump(mode="json", by_alias=True, exclude_none=True)
