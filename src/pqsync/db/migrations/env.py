"""Alembic environment: the engine comes from the caller (pqsync.db.migrate)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from pqsync.db.tables import Base

engine = context.config.attributes.get("engine")
if not isinstance(engine, Engine):  # pragma: no cover - only via pqsync.db.migrate
    raise RuntimeError("run migrations through pqsync.db.migrate")

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=engine.dialect.name == "sqlite",
    )
    context.run_migrations()
