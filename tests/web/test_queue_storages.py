"""`PQSYNC_QUEUE_URL` picks the queue's storage: a 202 bulk sync is queued and carried out
the same way on a SQLite file, Redis and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from web_support import Seed, open_client

from pqsync.bootstrap import App

REDIS = "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize("storage", ["sqlite", "redis", "postgresql"])
def test_a_queued_bulk_sync_is_carried_out_on_each_storage(
    build_app: Callable[..., App], seed: Seed, seeded_url: str, tmp_path: Path, storage: str
) -> None:
    name = f"pqsync-test-{uuid.uuid4().hex[:12]}"
    if storage == "sqlite":
        url = f"sqlite:///{tmp_path}/queue.db"
    elif storage == "redis":
        url = f"{REDIS}?queue={name}"
    elif seeded_url.startswith("postgresql"):
        url = seeded_url  # the queue's tables beside ours, in the test's own database
    else:
        pytest.skip("PostgreSQL storage is tried on the PostgreSQL run")
    app = build_app(PQSYNC_QUEUE_URL=url)
    try:
        with open_client(app) as client:
            response = client.post(
                f"/api/partner-dashboard/organizations/{seed.orgs['own']}/sync-all-patients",
                headers={**seed.bearer("partner_admin"), "Prefer": "respond-async"},
            )
            assert response.status_code == 202
            assert app.jobs.pending() == 1
            assert app.jobs.drain() == 1
            progress = client.get(response.headers["Location"], headers=seed.bearer("viewer"))
        assert progress.json()["status"] == "success"
        assert app.jobs.pending() == 0
    finally:
        if storage == "redis":
            connection = redis.Redis.from_url(REDIS)
            for key in connection.scan_iter(f"huey.*{name}*"):
                connection.delete(key)
            connection.close()
