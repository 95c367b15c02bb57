"""The clinic's staff pages: sync runs (filtered) and one run's detail with today's request
budget, and the practitioner mapping form."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse

from pqsync.domain import visibility
from pqsync.domain.run_types import RUN_TYPES
from pqsync.services.access import AccessQueryError, access_report
from pqsync.services.auth import Principal
from pqsync.services.organizations import all_organizations
from pqsync.services.practitioners import (
    PractitionerError,
    create_provider,
    map_practitioner,
    practitioner_choices,
    provider_choices,
    unmatched_practitioners,
)
from pqsync.services.staff_views import (
    RUN_STATUSES,
    RunFilters,
    StaffInputError,
    accuracy,
    recent_alerts,
    run_detail,
    sync_runs,
)
from pqsync.services.sync import Actor
from pqsync.web.context import WebContext
from pqsync.web.deps import (
    ContextDep,
    SessionDep,
    remember_staff_organization,
    remembered_organization,
)
from pqsync.web.page_support import (
    NO_TOKEN,
    CsrfField,
    PageNotFound,
    PageRoute,
    StaffUser,
    check_form_token,
    render,
)

router = APIRouter(prefix="/staff", route_class=PageRoute, include_in_schema=False)


@router.get("/runs")
def staff_runs(
    request: Request,
    ctx: ContextDep,
    session: SessionDep,
    user: StaffUser,
    organization: str | None = None,
    type: str = "",
    status: str = "",
    day: str = "",
) -> HTMLResponse:
    zone = ctx.dashboard(session, user).default_zone
    error = None
    if organization is None:  # not filtered yet: the organisation last chosen, if any
        organization = remembered_organization(request) or ""
    try:
        filters = RunFilters.parse(organization, type, status, day)
    except StaffInputError as exc:
        error, filters = str(exc), RunFilters()
    usage = ctx.budget_usage(session)
    organizations = all_organizations(session)
    response = render(
        ctx,
        request,
        "staff_runs.html",
        user,
        runs=sync_runs(session, filters, zone),
        alerts=recent_alerts(session, zone),
        accuracy=accuracy(session, zone),
        filters=filters,
        error=error,
        organizations=organizations,
        run_types=RUN_TYPES,
        run_statuses=RUN_STATUSES,
        usage=usage,
        left_today=max(0, usage.daily_limit - usage.day_used),
        webhooks=ctx.app.jobs.webhook_gate().budget(),
        pushes=ctx.app.push_service().unfinished(),
        now=ctx.now(),
        by_organization=ctx.app.fair_share().by_organization(ctx.now()),
        status_code=400 if error else 200,  # the page, with what was wrong with the filter
    )
    if any(o.id == filters.organization_id for o in organizations):
        remember_staff_organization(response, ctx, str(filters.organization_id))
    return response


@router.get("/runs/{run_id}")
def staff_run(
    run_id: str, request: Request, ctx: ContextDep, session: SessionDep, user: StaffUser
) -> HTMLResponse:
    detail = run_detail(session, run_id, ctx.dashboard(session, user).default_zone)
    if detail is None:
        raise PageNotFound()
    ctx.dashboard(session, user).record("staff_run_page", detail.patient_ids, f"run {run_id}")
    return render(ctx, request, "staff_run.html", user, detail=detail)


@router.get("/access")
def staff_access(
    request: Request,
    ctx: ContextDep,
    session: SessionDep,
    user: StaffUser,
    patient: Annotated[str, Query(max_length=64)] = "",
    email: Annotated[str, Query(alias="user", max_length=320)] = "",
    days: Annotated[int, Query(ge=1, le=3660)] = 90,
) -> HTMLResponse:
    """Who read a patient's data, or whose data a user read, over the last `days`."""
    zone = ctx.dashboard(session, user).default_zone
    report, error = None, None
    if patient or email:
        try:
            report = access_report(
                session,
                since=ctx.now() - timedelta(days=days),
                patient_id=patient or None,
                user_email=email or None,
            )
        except AccessQueryError as exc:
            error = f"{exc}."
    if report is not None and report.patient_names:
        # The answer names patients: reading it is itself a read of their data.
        ctx.dashboard(session, user).record("staff_access_page", report.patient_names)
    return render(
        ctx,
        request,
        "staff_access.html",
        user,
        report=report,
        error=error,
        patient=patient,
        user_email=email,
        days=days,
        zone=zone,
        status_code=422 if error else 200,
    )


def practitioners_page(
    request: Request,
    ctx: WebContext,
    user: Principal,
    *,
    message: str | None = None,
    error: str | None = None,
    errors: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    """The mapping page; after an error, with what was typed and chosen kept and the error
    next to its field (`errors` by field id, `form` by field id)."""
    return render(
        ctx,
        request,
        "staff_practitioners.html",
        user,
        unmatched=unmatched_practitioners(ctx.app.engine),
        practitioners=practitioner_choices(ctx.app.engine),
        providers=provider_choices(ctx.app.engine),
        message=message,
        error=error,
        errors=errors or {},
        form=form or {},
        status_code=status,
    )


def _field_errors(exc: PractitionerError, prefix: str = "") -> dict[str, str]:
    text = str(exc)
    return {f"{prefix}{exc.field}": text[:1].upper() + text[1:] + "."} if exc.field else {}


@router.get("/practitioners")
def staff_practitioners(
    request: Request,
    ctx: ContextDep,
    user: StaffUser,
    practitioner: Annotated[str, Query(max_length=64)] = "",
) -> HTMLResponse:
    """`?practitioner=` (a run's "Map it" link) comes with that practitioner chosen."""
    chosen = {"practitioner_id": practitioner, "new_practitioner_id": practitioner}
    return practitioners_page(request, ctx, user, form=chosen if practitioner else None)


def _practitioner_change(
    request: Request,
    ctx: WebContext,
    user: Principal,
    form: dict[str, str],
    change: Callable[[Actor], str],
    *,
    refused: str,
    prefix: str = "",
) -> HTMLResponse:
    """The answer of a form that changes the practitioners' mapping: refused for a role that
    may only read (403); the service's error next to its field, with what was typed kept
    (422); else the page with what `change` says it did."""
    if not visibility.may_administer(user):
        return practitioners_page(
            request, ctx, user, error=f"{refused}: your role may only read.", form=form, status=403
        )
    try:
        message = change(Actor(kind="user", user_id=user.user_id, name=user.name))
    except PractitionerError as exc:
        return practitioners_page(
            request,
            ctx,
            user,
            error=f"{refused}: {exc}.",
            errors=_field_errors(exc, prefix),
            form=form,
            status=422,
        )
    return practitioners_page(request, ctx, user, message=message)


@router.post("/practitioners")
def staff_map_practitioner(
    request: Request,
    ctx: ContextDep,
    user: StaffUser,
    csrf_token: CsrfField = NO_TOKEN,
    practitioner_id: Annotated[str, Form(max_length=64)] = "",
    provider: Annotated[str, Form(max_length=320)] = "",
) -> HTMLResponse:
    check_form_token(user, csrf_token)

    def change(actor: Actor) -> str:
        relinked = map_practitioner(
            ctx.app.engine, practitioner_id, provider.strip(), actor=actor, now=ctx.now()
        )
        return f"Mapped. {relinked} appointment(s) now show their provider."

    form = {"practitioner_id": practitioner_id, "provider": provider}
    return _practitioner_change(request, ctx, user, form, change, refused="Not mapped")


@router.post("/practitioners/providers")
def staff_create_provider(
    request: Request,
    ctx: ContextDep,
    user: StaffUser,
    csrf_token: CsrfField = NO_TOKEN,
    name: Annotated[str, Form(max_length=200)] = "",
    email: Annotated[str, Form(max_length=320)] = "",
    practitioner_id: Annotated[str, Form(max_length=64)] = "",
) -> HTMLResponse:
    """A new provider, mapped at once to the IntakeQ practitioner chosen with it (if any)."""
    check_form_token(user, csrf_token)

    def change(actor: Actor) -> str:
        created = create_provider(
            ctx.app.engine, name, email, practitioner_id, actor=actor, now=ctx.now()
        )
        message = f"Provider {created.name} created."
        if practitioner_id.strip():
            message += f" Mapped. {created.relinked} appointment(s) now show their provider."
        return message

    form = {"new_name": name, "new_email": email, "new_practitioner_id": practitioner_id}
    return _practitioner_change(
        request, ctx, user, form, change, refused="Provider not created", prefix="new_"
    )
