"""The app factory uvicorn imports in each worker process (`pqsync serve --workers N`):
every process builds its own App from the environment, like any other entry point."""

from __future__ import annotations

from fastapi import FastAPI

from pqsync.bootstrap import build_app
from pqsync.logging import configure_logging
from pqsync.settings import load_settings
from pqsync.startup_checks import check_startup
from pqsync.web.app import create_app


def create() -> FastAPI:
    configure_logging(level="INFO")
    app = build_app(load_settings())
    check_startup(app.settings, "web")
    app.require_schema()
    return create_app(app)
