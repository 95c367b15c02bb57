"""Many people press Sync at once: exactly one run per scope starts, every other answer is
409 naming it, and none is a 500 ("database is locked") on either database."""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from fastapi.testclient import TestClient
from web_support import Seed

# The size of the stampede; CI keeps it small, the figure is 200.
REQUESTS = int(os.environ.get("PQSYNC_TEST_STAMPEDE", "200"))


def test_concurrent_sync_all_give_one_202_and_the_rest_409(client: TestClient, seed: Seed) -> None:
    url = f"/api/partner-dashboard/organizations/{seed.orgs['own']}/sync-all-patients"
    headers = {**seed.bearer("staff_admin"), "Prefer": "respond-async"}

    with ThreadPoolExecutor(max_workers=32) as pool:
        answers = list(pool.map(lambda _: client.post(url, headers=headers), range(REQUESTS)))

    codes = Counter(a.status_code for a in answers)
    assert codes == {202: 1, 409: REQUESTS - 1}, codes
    started = next(a for a in answers if a.status_code == 202).json()["runId"]
    assert {a.json()["error"]["runId"] for a in answers if a.status_code == 409} == {started}


def test_concurrent_patient_syncs_never_answer_500(client: TestClient, seed: Seed) -> None:
    url = f"/api/partner-dashboard/patients/{seed.consenting}/sync"
    headers = seed.bearer("staff_admin")

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda _: client.post(url, headers=headers), range(40)))

    codes = Counter(a.status_code for a in answers)
    assert set(codes) <= {200, 409}, codes
    assert codes[200] >= 1
