"""The huey queue named by `PQSYNC_QUEUE_URL`: SQLite (default), Redis or PostgreSQL."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from huey import Huey, MemoryHuey, PostgresHuey, RedisHuey, SqliteHuey

from pqsync.settings import SettingsError

QUEUE_NAME = "pqsync"


def make_queue(url: str, name: str = QUEUE_NAME) -> Huey:
    """A huey instance over the storage the URL names; `memory://` keeps it in this process
    (a test's own queue, run with `Jobs.drain`)."""
    scheme = urlsplit(url).scheme.lower()
    if scheme == "sqlite":
        path = url.split("://", 1)[1].removeprefix("/")
        if not path or path == ":memory:":
            raise SettingsError("PQSYNC_QUEUE_URL: a SQLite queue needs a file path")
        file = Path(path)
        file.parent.mkdir(parents=True, exist_ok=True)
        if not file.exists():
            # Queued jobs name patients: readable by the owner only.
            os.close(os.open(file, os.O_CREAT | os.O_WRONLY, 0o600))
        return SqliteHuey(name, filename=path, results=False)
    if scheme in ("redis", "rediss", "unix"):
        # `?queue=NAME` names the queue (its keys' prefix), so that deployments can share a
        # Redis; the rest of the URL is redis-py's.
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        name = query.pop("queue", [name])[-1]
        rest = urlunsplit(parts._replace(query=urlencode(query, doseq=True)))
        return RedisHuey(name, url=rest, results=False)
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        dsn = "postgresql://" + url.split("://", 1)[1]
        return PostgresHuey(name, dsn=dsn, results=False)
    if scheme == "memory":
        return MemoryHuey(name, results=False)
    raise SettingsError(
        "PQSYNC_QUEUE_URL must start with sqlite:///, redis://, postgresql:// or memory://"
    )
