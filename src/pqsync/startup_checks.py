"""What the web app and the worker check before they start: a configuration that would
only fail later (a malformed SMTP URL at the first alert, a missing IntakeQ key at 03:00)
stops the start instead, with one line per problem naming the variable, never its value."""

from __future__ import annotations

from pathlib import PurePath
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from pqsync.logging import get_logger
from pqsync.services.alerts import SmtpError, SmtpMailer
from pqsync.settings import Settings, SettingsError

log = get_logger("pqsync.startup")

QUEUE_SCHEMES = ("sqlite", "redis", "rediss", "unix", "postgresql", "postgres", "memory")


def _smtp(settings: Settings) -> list[str]:
    if not settings.smtp_url:
        return []
    try:
        SmtpMailer.from_url(settings.smtp_url)
    except (SmtpError, ValueError):
        return [
            "PQSYNC_SMTP_URL is malformed: it must look like smtp://[user:password@]host[:port]"
        ]
    if not settings.alert_recipients:
        return ["PQSYNC_SMTP_URL is set but PQSYNC_ALERT_EMAILS is empty: alerts reach nobody"]
    return []


def _intakeq(settings: Settings) -> list[str]:
    """Production needs its own key and IntakeQ over https; elsewhere a missing key is
    only warned about (the simulator and the pages work without one)."""
    if settings.env != "production":
        try:
            settings.intakeq_key()
        except SettingsError as exc:
            log.warning("startup.no_intakeq_key", problem=str(exc))
        return []
    problems = []
    if settings.intakeq_api_key is None or not settings.intakeq_api_key.get_secret_value().strip():
        problems.append("INTAKEQ_API_KEY is not set (required in production)")
    if urlsplit(settings.intakeq_base_url).scheme != "https":
        problems.append("INTAKEQ_BASE_URL must be an https:// address in production")
    return problems


def _sqlite_path(url: str) -> str | None:
    """The file of a sqlite URL (None for another backend or an in-memory database)."""
    if not url.lower().startswith("sqlite"):
        return None
    path = url.split("://", 1)[1].removeprefix("/") if "://" in url else ""
    return path or None


def _queue(settings: Settings) -> list[str]:
    scheme = urlsplit(settings.queue_url).scheme.lower().split("+", 1)[0]
    if scheme not in QUEUE_SCHEMES:
        return ["PQSYNC_QUEUE_URL must start with sqlite:///, redis://, postgresql:// or memory://"]
    if scheme == "sqlite" and _sqlite_path(settings.queue_url) in (None, ":memory:"):
        return ["PQSYNC_QUEUE_URL: a SQLite queue needs a file path"]
    if scheme == "memory" and settings.env == "production":
        return ["PQSYNC_QUEUE_URL is memory:// (a queue no worker shares): refused in production"]
    return []


def _production(settings: Settings) -> list[str]:
    if settings.env != "production":
        return []
    problems = []
    if urlsplit(settings.base_url).scheme != "https":
        problems.append("PQSYNC_BASE_URL must be an https:// address in production")
    for variable, url in (
        ("PQSYNC_DATABASE_URL", settings.database_url),
        ("PQSYNC_QUEUE_URL", settings.queue_url),
    ):
        path = _sqlite_path(url)
        if path is not None and path != ":memory:" and not PurePath(path).is_absolute():
            problems.append(
                f"{variable} is a relative SQLite path: give an absolute one (sqlite:////var/...)"
                " so that every process uses the same file"
            )
    return problems


def configuration_problems(settings: Settings) -> list[str]:
    """Everything wrong with the configuration for serving or working, one line each."""
    problems: list[str] = []
    try:
        make_url(settings.database_url)
    except ArgumentError:
        problems.append("PQSYNC_DATABASE_URL is not a database URL")
    problems += _smtp(settings) + _intakeq(settings) + _queue(settings) + _production(settings)
    return problems


def check_startup(settings: Settings, role: str) -> None:
    """Refuse to start `role` (web, worker) on a configuration with problems; warn about
    SQLite in production (one machine, backups by `pqsync db backup`)."""
    problems = configuration_problems(settings)
    if problems:
        raise SettingsError(f"the {role} cannot start: " + "; ".join(problems))
    if settings.env == "production" and settings.database_url.lower().startswith("sqlite"):
        log.warning(
            "startup.sqlite_in_production",
            role=role,
            advice="one machine only; back up with `pqsync db backup` (see README)",
        )
