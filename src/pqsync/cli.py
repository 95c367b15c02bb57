"""The `pqsync` command line (Typer). Every command exits non-zero with one clear line on
stderr for bad input."""

from __future__ import annotations

import getpass
import json
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn
from zoneinfo import ZoneInfo

import typer
from alembic.util.exc import CommandError
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from sqlalchemy.orm import Session

from pqsync.bootstrap import App, NotSetUp, build_app
from pqsync.cli_web import users_cli
from pqsync.db.backup import BackupError, backup, restore
from pqsync.db.migrate import downgrade, schema_state, upgrade
from pqsync.domain.windows import Window, WindowError, parse_day, resolve_window
from pqsync.intakeq.errors import IntakeQError
from pqsync.logging import configure_logging
from pqsync.services.access import Accessor, AccessQueryError, access_report
from pqsync.services.directory import DirectoryError, import_directory_file
from pqsync.services.patient_records import PatientRecordError, erase_patient, export_patient
from pqsync.services.practitioners import (
    PractitionerError,
    map_practitioner,
    unmatched_practitioners,
)
from pqsync.services.push import PushInputError
from pqsync.services.sync import SyncInputError, SyncResult, SyncService
from pqsync.services.sync.locks import SyncInProgress
from pqsync.services.verify import VerificationResult, VerifyInputError
from pqsync.settings import SettingsError, load_settings
from pqsync.startup_checks import check_startup

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
patients_cli = typer.Typer(no_args_is_help=True, help="One patient's whole record.")
cli.add_typer(patients_cli, name="patients")
access_cli = typer.Typer(no_args_is_help=True, help="The access record: who read patient data.")
cli.add_typer(access_cli, name="access")
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
    VerifyInputError,
    AccessQueryError,
    BackupError,
    PatientRecordError,
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


@db_cli.command("current")
def db_current(
    check: Annotated[
        bool, typer.Option("--check", help="Exit 1 unless the schema is this version's head.")
    ] = False,
) -> None:
    """Print the database's schema revision and this version's head."""
    with application() as app:
        state = schema_state(app.engine)
        if state.current is None:
            fail("the database is not set up: run `pqsync db upgrade`")
        where = (
            "up to date"
            if state.current == state.head
            else "behind: run `pqsync db upgrade`"
            if state.behind
            else "ahead: written by a newer pqsync"
        )
        out.print(f"schema {state.current} (this version's head: {state.head}): {where}")
        if check and state.current != state.head:
            raise typer.Exit(1)


@db_cli.command("backup")
def db_backup(
    path: Annotated[Path, typer.Argument(help="A new file to write the backup to.")],
) -> None:
    """Back up the SQLite database to PATH (0600), consistent even while syncs write."""
    with application() as app:
        backup(app.settings.database_url, path)
        out.print(f"backed up to {path}", highlight=False, soft_wrap=True)


@db_cli.command("restore")
def db_restore(
    path: Annotated[Path, typer.Argument(help="A backup made by `pqsync db backup`.")],
    yes: Annotated[
        bool, typer.Option("--yes", help="Confirm: the database's content is replaced.")
    ] = False,
) -> None:
    """Replace the SQLite database with a backup (stop the web app and workers first)."""
    if not yes:
        fail("a restore replaces everything in the database: stop web and workers, add --yes")
    with application() as app:
        restore(app.settings.database_url, path)
        app.engine.dispose()
        state = schema_state(app.engine)
        out.print(
            f"restored from {path} (schema {state.current}; this version's head {state.head})",
            highlight=False,
            soft_wrap=True,
        )


@db_cli.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="The revision to go back to (e.g. 0004).")],
    yes: Annotated[
        bool, typer.Option("--yes", help="Confirm: columns and tables after it are dropped.")
    ] = False,
) -> None:
    """Take the schema back to an earlier revision (back up first: later tables and columns
    and their data are dropped). Each migration runs in its own transaction."""
    if not yes:
        fail("a downgrade drops the tables and columns of later revisions: back up, then add --yes")
    with application() as app:
        try:
            downgrade(app.engine, revision)
        except CommandError as exc:
            fail(f"cannot downgrade to {revision}: {exc}")
        out.print(f"database schema is now at {schema_state(app.engine).current}")


@directory_cli.command("import")
def directory_import(
    file: Annotated[Path, typer.Argument(help="The directory file (JSON).")],
    prune: Annotated[
        bool,
        typer.Option(
            "--prune",
            help="Also end the affiliations and users (of the organisations the file lists) "
            "that the file no longer names.",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report what would change; change nothing.")
    ] = False,
) -> None:
    """Import organisations, providers, services, patients, affiliations and users."""
    with application() as app:
        app.require_schema()
        counts = import_directory_file(app.engine, file, prune=prune, dry_run=dry_run)
        for line in counts.ended:
            out.print(
                ("would end: " if dry_run else "ended: ") + line, highlight=False, soft_wrap=True
            )
        created = sum(counts.created.values())
        updated = sum(counts.updated.values())
        unchanged = sum(counts.unchanged.values())
        ended = len(counts.ended)
        out.print(
            f"directory {'checked (dry run, nothing written)' if dry_run else 'imported'}: "
            f"{created} created, {updated} updated, {unchanged} unchanged, {ended} ended",
            highlight=False,
        )


DaysOpt = Annotated[int, typer.Option("--days", min=1, max=3660, help="How far back.")]


def _print_access(patient_id: str | None, email: str | None, days: int, as_json: bool) -> None:
    with application() as app:
        app.require_schema()
        with Session(app.engine) as session:
            report = access_report(
                session,
                since=app.clock() - timedelta(days=days),
                patient_id=patient_id,
                user_email=email,
            )
    rows = [
        {
            "accessed_at": e.accessed_at.isoformat(),
            "user_email": e.user_email,
            "user_role": e.user_role,
            "via": e.via,
            "view": e.view,
            "patient_id": str(e.patient_id),
            "detail": e.detail,
        }
        for e in report.entries
    ]
    if as_json:
        typer.echo(json.dumps({"subject": report.subject, "days": days, "reads": rows}))
        return
    out.print(f"{report.subject}: {len(rows)} read(s) in the last {days} days", highlight=False)
    for row in rows:
        out.print(
            f"{row['accessed_at']}  {row['user_email']} ({row['user_role']}, {row['via']})  "
            f"{row['view']}  patient {row['patient_id']}"
            + (f"  {row['detail']}" if row["detail"] else ""),
            highlight=False,
            soft_wrap=True,
        )


@access_cli.command("patient")
def access_patient(
    patient_id: Annotated[str, typer.Argument(help="The patient's id.")],
    days: DaysOpt = 90,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Who was shown this patient's data, newest first."""
    _print_access(patient_id, None, days, as_json)


@access_cli.command("user")
def access_user(
    email: Annotated[str, typer.Argument(help="The user's email.")],
    days: DaysOpt = 90,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Which patients' data this user was shown, newest first."""
    _print_access(None, email, days, as_json)


def _operator() -> str:
    return f"operator {getpass.getuser()}"


@patients_cli.command("export")
def patients_export(
    patient_id: Annotated[str, typer.Argument(help="The patient's id.")],
) -> None:
    """Print everything stored about one patient as JSON (right of access); recorded in
    the access record."""
    with application() as app:
        app.require_schema()
        with Session(app.engine) as session:
            data = export_patient(
                session, patient_id, by=Accessor(email=_operator()), now=app.clock()
            )
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


@patients_cli.command("erase")
def patients_erase(
    patient_id: Annotated[str, typer.Argument(help="The patient's id.")],
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: this cannot be undone.")] = False,
) -> None:
    """Erase a patient's identifiers, affiliations and appointments; the change history
    and the access record are kept under the patient's id."""
    if not yes:
        fail("erasing cannot be undone (export first if needed): add --yes")
    with application() as app:
        app.require_schema()
        with Session(app.engine) as session:
            pid = erase_patient(session, patient_id, by=_operator(), now=app.clock())
    out.print(f"patient {pid} erased; their history is kept", highlight=False)


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


# `pqsync verify`'s exit code when it found discrepancies (1 is for errors).
DISCREPANCIES_EXIT = 2


@cli.command("verify")
def verify(
    organization: Annotated[
        str | None, typer.Argument(help="Organisation id or slug (or --all).")
    ] = None,
    every: Annotated[bool, typer.Option("--all", help="Every organisation at once.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Compare what we store in the window with what IntakeQ has: missing, extra and stale
    appointments, by id. Exit 2 when there are discrepancies, 1 when it could not measure."""
    if (organization is None) == (not every):
        fail("name one organisation or pass --all")
    with application() as app:
        result = app.verifier().verify(None if every else organization)
    print_verification(result, as_json)


def print_verification(result: VerificationResult, as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(result.as_json()))
    else:
        scope = result.organization_name or "all organisations"
        out.print(
            f"{scope}: {result.window.start} to {result.window.end}, "
            f"{result.requests_made} IntakeQ request(s)",
            highlight=False,
        )
        if result.accuracy is not None:
            out.print(
                f"accuracy {result.accuracy:.1f}% ({result.compared:,} appointments compared): "
                f"{result.count('missing')} missing, {result.count('extra')} extra, "
                f"{result.count('stale')} stale",
                highlight=False,
            )
        if result.not_judged:
            out.print(
                f"note: {result.not_judged} IntakeQ record(s) could not be judged (unreadable, "
                "an email two IntakeQ clients share, or written by a sync meanwhile)",
                highlight=False,
            )
        for d in result.discrepancies[:50]:
            fields = "; ".join(
                f"{name} {v['stored']} -> {v['intakeq']}" if v else name
                for name, v in d.fields.items()
            )
            out.print(
                f"{d.kind}: appointment {d.appointment_id} (patient {d.patient_id}): {d.reason}"
                + (f" [{fields}]" if fields else ""),
                highlight=False,
                markup=False,
            )
    if result.status in ("failed", "skipped"):
        fail(f"verification {result.status}: {result.error}")
    if result.discrepancies:
        raise typer.Exit(DISCREPANCIES_EXIT)


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
        check_startup(app.settings, "worker")
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
