"""The app factory uvicorn imports in each worker process (`pqsync serve --workers N`):
every process builds its own App from the environment, like any other entry point."""

from __future__ import annotations

from fastapi import FastAPI

from pqsync.bootstrap import build_app
from pqsync.logging import configure_logging
from pqsync.settings import load_settings
from pqsync.startup_checks import check_startup
from pqsync.web.app import create_app
from pqsync.web.protocol import HeaderTimeoutProtocol


def create() -> FastAPI:
    configure_logging(level="INFO")
    app = build_app(load_settings())
    check_startup(app.settings, "web")
    # This process's connections are made by the protocol class the parent chose.
    HeaderTimeoutProtocol.header_timeout = app.settings.header_timeout_seconds
    app.require_schema()
    return create_app(app)
