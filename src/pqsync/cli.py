"""The `pqsync` command line (Typer). Every command exits non-zero with one clear line on
stderr for bad input."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn
from zoneinfo import ZoneInfo

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from sqlalchemy.orm import Session

from pqsync.bootstrap import App, NotSetUp, build_app
from pqsync.cli_web import users_cli
from pqsync.db.migrate import upgrade
from pqsync.domain.windows import Window, WindowError, parse_day, resolve_window
from pqsync.intakeq.errors import IntakeQError
from pqsync.logging import configure_logging
from pqsync.services.directory import DirectoryError, import_directory_file
from pqsync.services.practitioners import (
    PractitionerError,
    map_practitioner,
    unmatched_practitioners,
)
from pqsync.services.push import PushInputError
from pqsync.services.sync import SyncInputError, SyncResult, SyncService
from pqsync.services.sync.locks import SyncInProgress
from pqsync.settings import SettingsError, load_settings

cli = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
db_cli = typer.Typer(no_args_is_help=True, help="Database schema.")
directory_cli = typer.Typer(no_args_is_help=True, help="The directory of organisations and people.")
sync_cli = typer.Typer(no_args_is_help=True, help="Pull appointments from IntakeQ.")
cli.add_typer(db_cli, name="db")
cli.add_typer(directory_cli, name="directory")
practitioners_cli = typer.Typer(no_args_is_help=True, help="IntakeQ practitioners.")
cli.add_typer(sync_cli, name="sync")
cli.add_typer(practitioners_cli, name="practitioners")
cli.add_typer(users_cli, name="users")
appointments_cli = typer.Typer(
    no_args_is_help=True, help="Push our bookings to IntakeQ: book, cancel, reschedule."
)
cli.add_typer(appointments_cli, name="appointments")

out = Console()
err = Console(stderr=True)

# Errors that are the user's input or environment, not our bug: one line, exit 1.
USER_ERRORS = (
    SettingsError,
    DirectoryError,
    SyncInputError,
    WindowError,
    IntakeQError,
    NotSetUp,
    SyncInProgress,
    PractitionerError,
)


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    try:
        yield
    except USER_ERRORS as exc:
        fail(str(exc))


@contextmanager
def application() -> Iterator[App]:
    with user_errors():
        app = build_app(load_settings())
    try:
        with user_errors():
            yield app
    finally:
        app.close()


@cli.callback()
def main_options(
    log_level: Annotated[
        str,
        typer.Option(
            "--log-level",
            help="Level of the JSON log on stderr (INFO: one line per IntakeQ request).",
        ),
    ] = "ERROR",
) -> None:
    """pqsync keeps the clinic's database in step with IntakeQ appointments."""
    configure_logging(level=log_level.upper())


@db_cli.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the schema."""
    with application() as app:
        upgrade(app.engine)
        out.print("database schema is up to date")


@directory_cli.command("import")
def directory_import(
    file: Annotated[Path, typer.Argument(help="The directory file (JSON).")],
) -> None:
    """Import organisations, providers, services, patients, affiliations and users."""
    with application() as app:
        app.require_schema()
        counts = import_directory_file(app.engine, file)
        created = sum(counts.created.values())
        updated = sum(counts.updated.values())
        unchanged = sum(counts.unchanged.values())
        out.print(
            f"directory imported: {created} created, {updated} updated, {unchanged} unchanged"
        )


StartOpt = Annotated[str | None, typer.Option("--start", help="First day, YYYY-MM-DD.")]
EndOpt = Annotated[str | None, typer.Option("--end", help="Last day, YYYY-MM-DD.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def _check_dates(start: str | None, end: str | None) -> None:
    """Refuse a malformed or implausible --start/--end before anything else runs."""
    with user_errors():
        for field, value in (("startDate", start), ("endDate", end)):
            if value is not None:
                parse_day(field, value)


def _window(app: App, start: str | None, end: str | None, zone: str) -> Window | None:
    if start is None and end is None:
        return None
    return resolve_window(start, end, now=app.clock(), zone=ZoneInfo(zone))


@contextmanager
def progress_bar(enabled: bool) -> Iterator[Callable[[str, int, int | None], None]]:
    if not enabled:
        yield lambda _label, _done, _total: None
        return
    columns = (
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed} pages"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("syncing from IntakeQ", total=None)

        def advance(_label: str, done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        yield advance


def result_json(result: SyncResult) -> dict[str, Any]:
    return {
        "success": result.ok,
        "runId": str(result.run_id),
        "scope": result.scope,
        "status": result.status,
        "organizationId": str(result.organization_id) if result.organization_id else None,
        "organizationName": result.organization_name,
        "dateRange": {
            "startDate": result.window.start.isoformat(),
            "endDate": result.window.end.isoformat(),
        },
        "syncedAt": result.finished_at.isoformat(),
        "summary": result.summary.as_dict(),
        "requestsMade": result.requests_made,
        "patientsProcessed": len(result.patients),
        "unmatchedPractitioners": result.unmatched_practitioners,
        "unknownClientAppointments": result.unknown_clients,
        "plan": result.plan,
        "warnings": result.warnings,
        "error": result.error,
        "patientResults": [
            {
                "patientId": str(p.patient_id),
                "patientName": p.patient_name,
                "summary": p.summary.as_dict(),
            }
            for p in result.patients
        ],
    }


def print_result(result: SyncResult, as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(result_json(result)))
    else:
        scope = result.organization_name or "patient"
        s = result.summary
        out.print(
            f"{scope}: {len(result.patients)} patient(s), {result.window.start} to "
            f"{result.window.end}, {result.requests_made} IntakeQ request(s), plan {result.plan}",
            highlight=False,
        )
        out.print(
            f"summary: new {s.new}, updated {s.updated}, unchanged {s.unchanged}, "
            f"deleted {s.deleted}, errors {s.errors}",
            highlight=False,
        )
        if result.unknown_clients:
            out.print(
                f"note: {result.unknown_clients} appointment(s) of IntakeQ clients who are not "
                "patients in this scope were skipped (listed in the run's log)",
                highlight=False,
            )
        for practitioner, count in sorted(result.unmatched_practitioners.items()):
            out.print(
                f"warning: {count} appointment(s) of unmapped IntakeQ practitioner "
                f"{practitioner} stored without a provider",
                highlight=False,
            )
        for warning in result.warnings[:20]:
            out.print(f"warning: {warning}", highlight=False, markup=False)
    if not result.ok:
        fail(f"sync failed: {result.error} (run {result.run_id})")


def _run_sync(
    as_json: bool, run: Callable[[App, SyncService, Callable[..., None]], SyncResult]
) -> None:
    with application() as app:
        service = app.sync_service()
        with progress_bar(not as_json and sys.stderr.isatty()) as progress:
            result = run(app, service, progress)
        print_result(result, as_json)


@sync_cli.command("patient")
def sync_patient(
    patient: Annotated[str, typer.Argument(help="Patient id or email.")],
    start: StartOpt = None,
    end: EndOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Sync one patient's appointments."""
    _check_dates(start, end)

    def run(app: App, service: SyncService, progress: Callable[..., None]) -> SyncResult:
        window = _window(app, start, end, app.settings.practice_timezone)
        return service.sync_patient(patient, window=window, progress=progress)

    _run_sync(as_json, run)


@sync_cli.command("org")
def sync_org(
    organization: Annotated[str, typer.Argument(help="Organisation id or slug.")],
    start: StartOpt = None,
    end: EndOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Sync every patient of an organisation."""
    _check_dates(start, end)

    def run(app: App, service: SyncService, progress: Callable[..., None]) -> SyncResult:
        window = _window(app, start, end, app.settings.practice_timezone)
        return service.sync_organization(organization, window=window, progress=progress)

    _run_sync(as_json, run)


@sync_cli.command("nightly")
def sync_nightly(as_json: JsonOpt = False) -> None:
    """What the schedule runs: every organisation, the practice fetched once."""

    def run(app: App, service: SyncService, progress: Callable[..., None]) -> SyncResult:
        return service.sync_nightly(progress=progress)

    _run_sync(as_json, run)


@practitioners_cli.command("list")
def practitioners_list() -> None:
    """IntakeQ practitioners with stored appointments but no provider."""
    with application() as app:
        app.require_schema()
        rows = unmatched_practitioners(app.engine)
        if not rows:
            out.print("every practitioner with appointments is mapped")
        for row in rows:
            out.print(
                f"{row.practitioner_id}\t{row.name or '(no name)'}\t"
                f"{row.appointments} appointment(s)",
                highlight=False,
                markup=False,
            )


@practitioners_cli.command("map")
def practitioners_map(
    practitioner_id: Annotated[str, typer.Argument(help="IntakeQ PractitionerId.")],
    provider: Annotated[str, typer.Argument(help="Our provider's id or email.")],
) -> None:
    """Map an IntakeQ practitioner to a provider and re-link its stored appointments."""
    with application() as app:
        app.require_schema()
        relinked = map_practitioner(app.engine, practitioner_id, provider)
        out.print(f"mapped; {relinked} stored appointment(s) re-linked", highlight=False)


def _pushed(app: App, push_id: uuid.UUID) -> None:
    """Send a stored push now and say what became of it; IntakeQ not answering queues it
    for the worker (exit 0), IntakeQ refusing it is an error."""
    outcome = app.push_service().send(push_id)
    if outcome is None:
        fail("the push request vanished")
    if outcome.status == "failed":
        fail(outcome.error or "IntakeQ refused it")
    if outcome.retry:
        app.jobs.push_later(push_id, outcome.attempts)
        out.print(f"{outcome.error}: queued for the worker (push {push_id})", highlight=False)
        return
    out.print(
        f"{outcome.kind}: done in IntakeQ, appointment {outcome.intakeq_appointment_id}",
        highlight=False,
    )


def _start(raw: str) -> datetime:
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        fail("--start must be a date and time with its offset, e.g. 2025-11-20T10:30:00-07:00")
    if moment.tzinfo is None:
        fail("--start needs its offset, e.g. 2025-11-20T10:30:00-07:00")
    return moment


@appointments_cli.command("book")
def appointments_book(
    patient: Annotated[str, typer.Argument(help="Our patient's id or email.")],
    start: Annotated[str, typer.Option(help="Start with its offset (ISO 8601).")],
    practitioner: Annotated[str, typer.Option(help="IntakeQ PractitionerId.")],
    service: Annotated[str, typer.Option(help="IntakeQ ServiceId.")],
    location: Annotated[str, typer.Option(help="IntakeQ LocationId.")],
    status: Annotated[str, typer.Option(help="Confirmed or WaitingConfirmation.")] = "Confirmed",
) -> None:
    """Book an appointment in IntakeQ for one of our patients (never twice)."""
    moment = _start(start)
    with application() as app:
        app.require_schema()
        with Session(app.engine) as session:
            patient_id = app.sync_service().find_patient(session, patient).id
        try:
            push_id = app.push_service().request_booking(
                patient_id,
                moment,
                practitioner_id=practitioner,
                service_id=service,
                location_id=location,
                status=status,
                requested_by="command line",
            )
        except PushInputError as exc:
            fail(str(exc))
        _pushed(app, push_id)


@appointments_cli.command("cancel")
def appointments_cancel(
    appointment: Annotated[str, typer.Argument(help="IntakeQ's appointment Id.")],
    reason: Annotated[str | None, typer.Option(help="Why (sent to IntakeQ).")] = None,
) -> None:
    """Cancel in IntakeQ an appointment we store."""
    with application() as app:
        app.require_schema()
        try:
            push_id = app.push_service().request_change(
                "cancel", appointment, reason=reason, requested_by="command line"
            )
        except PushInputError as exc:
            fail(str(exc))
        _pushed(app, push_id)


@appointments_cli.command("reschedule")
def appointments_reschedule(
    appointment: Annotated[str, typer.Argument(help="IntakeQ's appointment Id.")],
    start: Annotated[str, typer.Option(help="New start with its offset (ISO 8601).")],
) -> None:
    """Move in IntakeQ an appointment we store to a new start."""
    moment = _start(start)
    with application() as app:
        app.require_schema()
        try:
            push_id = app.push_service().request_change(
                "reschedule", appointment, start=moment, requested_by="command line"
            )
        except PushInputError as exc:
            fail(str(exc))
        _pushed(app, push_id)


@cli.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[
        int, typer.Option(help="Processes serving the port (each with its own connections).")
    ] = 1,
) -> None:
    """Run the web app (dashboard, JSON API, webhook receiver, /docs, /metrics) until Ctrl-C."""
    from pqsync.cli_web import serve as run_server

    configure_logging(level="INFO")
    with user_errors():
        run_server(host=host, port=port, workers=workers)


@cli.command("worker")
def worker(
    workers: Annotated[int, typer.Option(min=1, help="Jobs run at once (threads).")] = 2,
    drain: Annotated[
        bool, typer.Option("--drain", help="Run what is queued now, then exit (no schedule).")
    ] = False,
) -> None:
    """Run the queue (PQSYNC_QUEUE_URL): queued syncs, webhook re-fetches, and the schedule
    (03:00 nightly runs in each organisation's zone, stale runs, alerts, pruning)."""
    from pqsync.jobs.worker import run_worker

    configure_logging(level="INFO")
    with application() as app:
        app.require_schema()
        if drain:
            out.print(f"{app.jobs.drain()} job(s) run", highlight=False)
            return
        run_worker(app, workers=workers)


@cli.command("simulator")
def simulator(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8765,
    seed: Annotated[int, typer.Option(help="Seed of the data set.")] = 1,
    latency_ms: Annotated[int, typer.Option(help="Latency added to every request.")] = 0,
    fail_rate: Annotated[float, typer.Option(help="Fraction of requests that fail.")] = 0.0,
    patients: Annotated[int, typer.Option(help="First Step House patients.")] = 12,
    appointments: Annotated[
        int | None, typer.Option(help="Total appointments in the practice.")
    ] = None,
    minute_limit: Annotated[int, typer.Option(help="Requests per minute (0: none).")] = 10,
    daily_limit: Annotated[int, typer.Option(help="Requests per day (0: none).")] = 500,
    webhook_url: Annotated[
        str | None, typer.Option(help="POST an IntakeQ webhook here on every change.")
    ] = None,
) -> None:
    """Run the IntakeQ simulator until Ctrl-C."""
    from intakeq_sim import serve

    if not 0.0 <= fail_rate <= 1.0:
        fail("--fail-rate must be between 0 and 1")
    serve(
        port=port,
        seed=seed,
        latency_ms=latency_ms,
        fail_rate=fail_rate,
        patients=patients,
        appointments=appointments,
        minute_limit=minute_limit,
        daily_limit=daily_limit,
        webhook_url=webhook_url,
    )


@cli.command("demo")
def demo(
    port: Annotated[int, typer.Option(help="Simulator port on 127.0.0.1.")] = 8765,
    web_port: Annotated[int, typer.Option(help="Web app port on 127.0.0.1.")] = 8000,
    once: Annotated[
        bool, typer.Option("--once", help="Exit after the sync instead of staying up.")
    ] = False,
) -> None:
    """Simulator + seeded data + a sync of First Step House."""
    from pqsync.services.demo import run_demo

    with user_errors():
        run_demo(port=port, web_port=web_port, once=once, out=out, err=err)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
