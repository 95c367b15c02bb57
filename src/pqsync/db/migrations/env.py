"""Alembic environment: the engine comes from the caller (pqsync.db.migrate).

Each migration runs in its own transaction. On SQLite, foreign keys are off while
migrations run: a batch migration recreates a table (copy, drop, rename), and with
foreign keys on, dropping the old table would cascade-delete the rows that refer to it.
On PostgreSQL a migration waits at most `lock_timeout` for a lock, so an upgrade that
cannot get one fails instead of blocking the app's requests behind it.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine, text

from pqsync.db.tables import Base

engine = context.config.attributes.get("engine")
if not isinstance(engine, Engine):  # pragma: no cover - only via pqsync.db.migrate
    raise RuntimeError("run migrations through pqsync.db.migrate")

sqlite = engine.dialect.name == "sqlite"

with engine.connect() as connection:
    if sqlite:
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()
    else:
        connection.execute(text("SET lock_timeout = '5s'"))
        connection.commit()
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=sqlite,
        transaction_per_migration=True,
    )
    try:
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
    finally:
        if sqlite:
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.commit()
