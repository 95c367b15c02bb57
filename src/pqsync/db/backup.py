"""`pqsync db backup` and `db restore` for SQLite, through SQLite's online backup API: the
copy is one consistent snapshot even while a sync writes (copying the file of a database in
WAL mode is not). PostgreSQL is backed up with its own tools (README: pg_dump, WAL archiving).

Every file is created readable by its owner only (0600): it holds patient data.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import make_url

PRIVATE = 0o600


class BackupError(RuntimeError):
    """A backup or restore cannot be done as asked; the message says why in one line."""


def private_file(path: Path) -> None:
    """Create `path` empty with mode 0600 if it does not exist; tighten it if it does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_CREAT | os.O_WRONLY, PRIVATE)
    os.close(descriptor)
    os.chmod(path, PRIVATE)


def sqlite_file(database_url: str) -> Path:
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        raise BackupError(
            "db backup and db restore are for SQLite; back up PostgreSQL with pg_dump "
            "or WAL archiving (see the README)"
        )
    if not url.database or url.database == ":memory:":
        raise BackupError("the database is in memory: nothing to back up")
    return Path(url.database)


def _check(connection: sqlite3.Connection, what: str) -> None:
    (answer,) = connection.execute("PRAGMA integrity_check").fetchone()
    if answer != "ok":
        raise BackupError(f"{what} failed SQLite's integrity check")
    tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    if "alembic_version" not in tables:
        raise BackupError(f"{what} is not a pqsync database")


def backup(database_url: str, target: Path) -> None:
    """Copy the live database to `target` (a new file, 0600) as one consistent snapshot."""
    source = sqlite_file(database_url)
    if not source.exists():
        raise BackupError(f"no database file at {source}")
    if target.exists():
        raise BackupError(f"{target} exists: give a new file name")
    partial = target.with_name(target.name + ".partial")
    private_file(partial)
    try:
        with (
            closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)) as live,
            closing(sqlite3.connect(partial)) as copy,
        ):
            # pages=-1: the whole database in one step, under one read transaction.
            live.backup(copy, pages=-1)
            copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            _check(copy, "the backup")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


INTERRUPTED = "stopped: the database was restored from a backup taken while this run went on"


def _close_interrupted_runs(connection: sqlite3.Connection) -> None:
    """Runs that were going when the backup was taken have no process any more: close them
    as failed and free their scopes, so that the next run starts at once."""
    now = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")
    with connection:
        connection.execute("DELETE FROM sync_locks")
        connection.execute(
            "UPDATE sync_logs SET status = 'failed', error_message = ?, finished_at = ?"
            " WHERE status = 'running'",
            (INTERRUPTED, now),
        )


def restore(database_url: str, source: Path) -> None:
    """Replace the database's content with the backup's (stop the web app and the workers
    first). The backup is checked before anything is overwritten."""
    target = sqlite_file(database_url)
    if not source.is_file():
        raise BackupError(f"no backup file at {source}")
    with closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as backup_copy:
        _check(backup_copy, "the backup")
        private_file(target)
        with closing(sqlite3.connect(target, timeout=30)) as live:
            backup_copy.backup(live, pages=-1)
            _check(live, "the restored database")
            _close_interrupted_runs(live)
    for suffix in ("", "-wal", "-shm"):
        sibling = target.with_name(target.name + suffix)
        if sibling.exists():
            os.chmod(sibling, PRIVATE)
