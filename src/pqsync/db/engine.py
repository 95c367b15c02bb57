"""Engine construction for SQLite and PostgreSQL."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

WRITE_INTENT = "pqsync_write_intent"


def begin_write(session: Session) -> None:
    """Start the session's next transaction as a writing one (BEGIN IMMEDIATE on SQLite).

    Call it before the first statement of a read-then-write transaction.
    """
    if not session.in_transaction():
        session.connection(execution_options={WRITE_INTENT: True})


def write_connection(engine: Engine) -> Connection:
    """A connection whose next transaction writes (BEGIN IMMEDIATE on SQLite).

    Use as `with write_connection(engine) as conn, conn.begin(): ...`.
    """
    return engine.connect().execution_options(**{WRITE_INTENT: True})


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Build an engine; SQLite gets its parent folder, foreign keys, WAL and a busy timeout."""
    parsed = make_url(url)
    # A database error must not repeat the row it failed on (appointment data) in
    # messages that reach logs and run records.
    kwargs.setdefault("hide_parameters", True)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            # Patient data: the file (and so its -wal and -shm, which SQLite creates with
            # the same mode) is readable by its owner only.
            path = Path(database)
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            os.chmod(path, 0o600)
        connect_args = dict(kwargs.pop("connect_args", {}))
        # The busy timeout: a writer waits this long for another's transaction to end.
        connect_args.setdefault("timeout", 30)
        engine = create_engine(url, connect_args=connect_args, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy emit BEGIN itself so BEGIN IMMEDIATE works for locks.
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # A transaction that will write takes the write lock up front: upgrading a read
            # transaction after another connection wrote fails at once with "database is
            # locked", where BEGIN IMMEDIATE waits for the busy timeout instead.
            immediate = conn.get_execution_options().get(WRITE_INTENT, False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"
