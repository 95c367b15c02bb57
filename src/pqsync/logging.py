"""Structured logging (structlog, JSON lines) that never writes patient data or secrets."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import Any, Protocol, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "[redacted]"
REDACTED_EMAIL = "[redacted email]"

# Compared after lower-casing and dropping "-" and "_", so `X-Auth-Key`, `client_email` and
# IntakeQ's own `ClientEmail` all match.
_SENSITIVE_KEYS = frozenset(
    key.replace("_", "").replace("-", "")
    for key in (
        "email",
        "client",
        "client_email",
        "client_name",
        "client_phone",
        "client_date_of_birth",
        "name",
        "first_name",
        "last_name",
        "patient_name",
        "full_name",
        "phone",
        "date_of_birth",
        "dob",
        "search",
        "api_key",
        "key",
        "password",
        "token",
        "secret",
        "authorization",
        "cookie",
        "x-auth-key",
    )
)

# Also catches the URL-encoded form (`ann%40x.org`) that appears in query strings.
_EMAIL = re.compile(r"[\w.+%-]+(?:@|%40)[\w-]+(?:\.[\w-]+)+", re.IGNORECASE)

# Libraries that log full URLs (with `?client=<email>`) at INFO.
_CHATTY_LOGGERS = ("httpx", "httpcore", "httpx2", "httpcore2")


class EventLogger(Protocol):
    """What pqsync code needs from a logger: structlog's bound loggers satisfy it."""

    def debug(self, event: str, **kw: Any) -> Any: ...
    def info(self, event: str, **kw: Any) -> Any: ...
    def warning(self, event: str, **kw: Any) -> Any: ...
    def error(self, event: str, **kw: Any) -> Any: ...


def _is_sensitive(key: object) -> bool:
    return isinstance(key, str) and key.lower().replace("_", "").replace("-", "") in _SENSITIVE_KEYS


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return _EMAIL.sub(REDACTED_EMAIL, value)
    if isinstance(value, Mapping):
        return {k: REDACTED if _is_sensitive(k) else _redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact(item) for item in value]
    return value


def redact_patient_data(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: mask patient identifiers and secrets, in nested values too.

    Values under sensitive keys (email, client, name, phone, date_of_birth, search, api_key,
    token, authorization, x-auth-key, ...; case-insensitive) become "[redacted]", and anything
    that looks like an email address inside any string becomes "[redacted email]".
    """
    return {
        key: value
        if key.startswith("_")  # structlog's own bookkeeping (`_record`, `_from_structlog`)
        else REDACTED
        if _is_sensitive(key)
        else _redact(value)
        for key, value in event_dict.items()
    }


class _PqsyncHandler(logging.StreamHandler[TextIO]):
    """Marks the handler configure_logging installed, so calling it again replaces it."""


_SHARED: list[Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def make_formatter(json: bool = True) -> logging.Formatter:
    """The redacting formatter every pqsync log handler uses (JSON lines, or plain text)."""
    renderer: Processor = (
        structlog.processors.JSONRenderer(default=str)
        if json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Tracebacks become strings first so the redaction sees them too.
            structlog.processors.format_exc_info,
            redact_patient_data,
            renderer,
        ],
    )


def configure_logging(level: str = "INFO", json: bool = True, stream: TextIO | None = None) -> None:
    """Send structlog events and stdlib records (uvicorn, httpx, ...) through one redacting
    pipeline to `stream` (stderr by default): JSON lines with timestamp, level, logger, event.

    httpx and httpcore are held at WARNING because at INFO they log full request URLs,
    query string included.
    """
    handler = _PqsyncHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(make_formatter(json))

    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _PqsyncHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_SHARED,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger named `name` (the stdlib logger name, e.g. `pqsync.intakeq.client`)."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
