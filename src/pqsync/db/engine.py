"""Engine construction for SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
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


class _GatedConnection(sqlite3.Connection):
    """A SQLite connection whose writing transactions queue on a lock shared in-process.

    SQLite has one writer per database. Connections that find it busy sleep in SQLite's
    busy handler (1, 2, 5, 10, 15 ms...), so a thread waiting for another thread's
    10 ms transaction sleeps 18 ms. Threads of one process instead wait on `gate`, a
    Python lock held from BEGIN IMMEDIATE to COMMIT or ROLLBACK, and are woken the moment
    it is released; other processes still meet the busy handler.
    """

    gate: threading.Lock | None = None
    gate_timeout: float = 30.0
    holds_gate = False

    def begin_immediate(self) -> None:
        gate = self.gate
        if gate is not None and not self.holds_gate:
            # On timeout, go on without it: SQLite's busy timeout then decides, as before.
            self.holds_gate = gate.acquire(timeout=self.gate_timeout)
        try:
            self.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._release_gate()
            raise

    def _release_gate(self) -> None:
        if self.holds_gate and self.gate is not None:
            self.holds_gate = False
            self.gate.release()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._release_gate()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._release_gate()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._release_gate()


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Build an engine; SQLite gets its parent folder, foreign keys, WAL and a busy timeout."""
    parsed = make_url(url)
    # A database error must not repeat the row it failed on (appointment data) in
    # messages that reach logs and run records.
    kwargs.setdefault("hide_parameters", True)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        connect_args = dict(kwargs.pop("connect_args", {}))
        connect_args.setdefault("timeout", 30)
        connect_args.setdefault("factory", _GatedConnection)
        engine = create_engine(url, connect_args=connect_args, **kwargs)
        gate = threading.Lock()  # one per engine: an engine is one database file

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            if isinstance(dbapi_conn, _GatedConnection):
                dbapi_conn.gate = gate
                dbapi_conn.gate_timeout = float(connect_args["timeout"])
            # Let SQLAlchemy emit BEGIN itself so BEGIN IMMEDIATE works for locks.
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA wal_autocheckpoint=8000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # A transaction that will write takes the write lock up front: upgrading a read
            # transaction after another connection wrote fails at once with "database is
            # locked", where BEGIN IMMEDIATE waits for the busy timeout instead.
            immediate = conn.get_execution_options().get(WRITE_INTENT, False)
            dbapi_conn = conn.connection.dbapi_connection
            if immediate and isinstance(dbapi_conn, _GatedConnection):
                dbapi_conn.begin_immediate()
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"
