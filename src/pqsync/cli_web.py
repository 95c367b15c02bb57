"""`pqsync users ...` and `pqsync serve` (Typer); the lead registers them in cli.py."""

from __future__ import annotations

import os
import shutil
import tempfile
from datetime import datetime, timedelta
from typing import Annotated, Any

import typer
from rich.console import Console
from sqlalchemy.orm import Session

from pqsync.bootstrap import App, NotSetUp, build_app
from pqsync.services.passwords import hash_password, password_problem
from pqsync.services.users import (
    UserInputError,
    create_user,
    deactivate_user,
    find_user,
    issue_reset,
    issue_token,
    list_tokens,
    revoke_tokens,
    set_password,
)
from pqsync.settings import Settings, SettingsError, load_settings
from pqsync.startup_checks import check_startup

users_cli = typer.Typer(no_args_is_help=True, help="Dashboard users and their API tokens.")

out = Console()
err = Console(stderr=True)


def _fail(message: str) -> typer.Exit:
    err.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(1)


def _app(role: str | None = None) -> App:
    try:
        app = build_app(load_settings())
        if role is not None:
            check_startup(app.settings, role)
        app.require_schema()
    except (SettingsError, NotSetUp) as exc:
        raise _fail(str(exc)) from None
    return app


@users_cli.command("create")
def users_create(
    email: Annotated[str, typer.Option("--email", help="The login email.")],
    role: Annotated[
        str, typer.Option("--role", help="staff_admin, partner_admin, case_manager or viewer.")
    ],
    org: Annotated[
        str | None, typer.Option("--org", help="Organisation slug or id (not for staff_admin).")
    ] = None,
    password: Annotated[
        str | None, typer.Option("--password", help="Asked for when left out.")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Shown in the sync history.")] = None,
) -> None:
    """Create a dashboard user with a password."""
    if password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    app = _app()
    try:
        with Session(app.engine) as session:
            user = create_user(
                session, email=email, role=role, password=password, organization=org, name=name
            )
            out.print(f"created {user.role} {user.email}", highlight=False)
    except UserInputError as exc:
        raise _fail(str(exc)) from None
    finally:
        app.close()


@users_cli.command("token")
def users_token(
    email: Annotated[str, typer.Argument(help="The user's email.")],
    label: Annotated[str | None, typer.Option("--label", help="What the token is for.")] = None,
) -> None:
    """Print a new API bearer token for the user (shown once; only its hash is kept)."""
    app = _app()
    try:
        with Session(app.engine) as session:
            issued = issue_token(session, email, now=app.clock(), label=label)
    except UserInputError as exc:
        raise _fail(str(exc)) from None
    finally:
        app.close()
    typer.echo(issued.token)


@users_cli.command("tokens")
def users_tokens(email: Annotated[str, typer.Argument(help="The user's email.")]) -> None:
    """List the user's API tokens: id, label, issued, expires, last used, revoked."""
    app = _app()
    try:
        with Session(app.engine) as session:
            tokens = list_tokens(session, email)
    except UserInputError as exc:
        raise _fail(str(exc)) from None
    finally:
        app.close()
    life = timedelta(days=app.settings.api_token_days)

    def day(moment: datetime | None) -> str:
        return moment.date().isoformat() if moment is not None else "-"

    typer.echo("id label issued expires last_used revoked")
    for t in tokens:
        label = (t.label or "-").replace(" ", "_")
        expires = day(t.created_at + life)
        typer.echo(
            f"{t.id} {label} {day(t.created_at)} {expires} {day(t.last_used_at)} "
            f"{day(t.revoked_at)}"
        )


@users_cli.command("revoke")
def users_revoke(
    email: Annotated[str, typer.Argument(help="The user's email.")],
    token_id: Annotated[
        str | None,
        typer.Option("--token-id", help="Revoke only this token (see `pqsync users tokens`)."),
    ] = None,
) -> None:
    """Revoke the user's API tokens: all of them, or the one `--token-id` names."""
    app = _app()
    try:
        with Session(app.engine) as session:
            count = revoke_tokens(session, email, now=app.clock(), token_id=token_id)
    except UserInputError as exc:
        raise _fail(str(exc)) from None
    finally:
        app.close()
    out.print(f"revoked {count} token(s)", highlight=False)


@users_cli.command("deactivate")
def users_deactivate(email: Annotated[str, typer.Argument(help="The user's email.")]) -> None:
    """Take a user off at once: no more logins, every session and API token ended."""
    app = _app()
    try:
        with Session(app.engine) as session:
            user = find_user(session, email)
            done = deactivate_user(session, user.id, by="cli", now=app.clock())
    except UserInputError as exc:
        raise _fail(str(exc)) from None
    finally:
        app.close()
    state = "was already deactivated" if done.already_inactive else "deactivated"
    out.print(
        f"{done.email} {state}: {done.sessions_ended} session(s) ended, "
        f"{done.tokens_revoked} token(s) revoked",
        highlight=False,
        soft_wrap=True,
    )


@users_cli.command("set-password")
def users_set_password(
    email: Annotated[str, typer.Argument(help="The user's email.")],
) -> None:
    """Set a user's password (asked for, twice); their open sessions end."""
    password = typer.prompt("New password", hide_input=True, confirmation_prompt=True)
    app = _app()
    try:
        with Session(app.engine) as session:
            ended = set_password(session, email, password, now=app.clock())
    except UserInputError as exc:
        raise _fail(str(exc)) from None
    finally:
        app.close()
    out.print(f"password set; {ended} open session(s) ended", highlight=False)


@users_cli.command("hash-password")
def users_hash_password() -> None:
    """Print the argon2 hash of a password (asked for twice) for a directory file's
    `password_hash`, so that the file holds no password."""
    password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    problem = password_problem(password)
    if problem is not None:
        raise _fail(problem)
    typer.echo(hash_password(password))


@users_cli.command("reset-link")
def users_reset_link(
    email: Annotated[str, typer.Argument(help="The user's email.")],
    mail: Annotated[
        bool, typer.Option("--mail", help="Mail the link to the user (needs PQSYNC_SMTP_URL).")
    ] = False,
) -> None:
    """Issue a one-time password reset link (valid 24 hours): printed, or mailed."""
    from pqsync.services.alerts import SmtpMailer

    app = _app()
    try:
        if mail and not app.settings.smtp_url:
            raise UserInputError("--mail needs PQSYNC_SMTP_URL")
        with Session(app.engine) as session:
            token, address = issue_reset(session, email, by="cli", now=app.clock())
        link = f"{app.settings.base_url.rstrip('/')}/reset/{token}"
        if mail and app.settings.smtp_url:
            SmtpMailer.from_url(app.settings.smtp_url).send(
                [address],
                "pqsync: set your password",
                "Someone at the clinic issued a link for you to set your pqsync password.\n"
                f"It works once, within 24 hours:\n\n{link}\n\n"
                "If you did not expect it, tell the clinic.\n",
            )
            out.print(f"reset link mailed to {address}", highlight=False)
            return
    except UserInputError as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        raise _fail(f"the mail could not be sent ({type(exc).__name__})") from None
    finally:
        app.close()
    typer.echo(link)


def serve(
    host: str = "127.0.0.1", port: int = 8000, app: App | None = None, workers: int = 1
) -> None:
    """Run the web app with uvicorn until Ctrl-C: in this process, or in `workers` processes
    sharing the port (so one heavy page does not hold up /healthz and everyone else).

    uvicorn's access log is off: it would write query strings, which hold the webhook
    token; the app logs each request itself. uvicorn's own X-Forwarded-For handling is off:
    by default it believes any caller on loopback; the app believes only
    PQSYNC_TRUSTED_PROXIES."""
    import uvicorn

    from pqsync.web.app import create_app

    if workers < 1:
        raise _fail("--workers must be at least 1")
    if workers > 1:
        checked = _app("web")  # settings and schema are checked once, here, with a clear error
        checked.close()
        # The processes count HTTP metrics into files here, so /metrics sums them all.
        own_dir = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
        metrics_dir = os.environ.setdefault(
            "PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="pqsync-metrics-")
        )
        try:
            uvicorn.run(
                "pqsync.web.asgi:create",
                factory=True,
                host=host,
                port=port,
                workers=workers,
                **_server_options(checked.settings),
            )
        finally:
            if own_dir:
                shutil.rmtree(metrics_dir, ignore_errors=True)
        return
    app = app or _app("web")
    try:
        uvicorn.run(
            create_app(app),
            host=host,
            port=port,
            **_server_options(app.settings),
        )
    finally:
        app.close()


def _server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's settings against slow and hostile clients: h11 with a header size limit
    and a header read timeout (each worker process sets its own from the settings too), a
    bound on connections (503 past it), idle keep-alive connections closed after 5 s."""
    from pqsync.web.protocol import HeaderTimeoutProtocol
    from pqsync.web.security import MAX_HEADER_BYTES

    HeaderTimeoutProtocol.header_timeout = settings.header_timeout_seconds
    return {
        "access_log": False,
        "log_config": None,
        "proxy_headers": False,
        "http": HeaderTimeoutProtocol,
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
        "limit_concurrency": settings.max_connections,
        "timeout_keep_alive": 5,
    }
