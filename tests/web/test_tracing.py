"""Tracing: every response and every log line of a request carry its request id; every
IntakeQ request line of a run carries the run's id (from the click to IntakeQ)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from web_support import Seed, open_client

from pqsync.bootstrap import App
from pqsync.db.tables import SyncLog
from pqsync.logging import make_formatter
from pqsync.services.access import access_for_patient

PATIENTS = "/api/partner-dashboard/patients"


class LogCapture:
    """The JSON log lines written while it is installed, as the real formatter writes them."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(make_formatter())
        self.handler.setLevel(logging.DEBUG)

    def lines(self, event: str) -> list[dict[str, Any]]:
        parsed = [json.loads(line) for line in self.stream.getvalue().splitlines() if line]
        return [line for line in parsed if line.get("event") == event]


@pytest.fixture
def captured() -> Iterator[LogCapture]:
    capture = LogCapture()
    root = logging.getLogger()
    level = root.level  # a CLI test before may have set ERROR
    root.setLevel(logging.INFO)
    root.addHandler(capture.handler)
    try:
        yield capture
    finally:
        root.removeHandler(capture.handler)
        root.setLevel(level)


def test_a_request_id_is_on_the_response_its_log_lines_and_its_access_records(
    pq_app: App, seed: Seed, captured: LogCapture
) -> None:
    api = open_client(pq_app)

    answer = api.get(f"{PATIENTS}/{seed.consenting}/appointments", headers=seed.bearer("viewer"))
    given = api.get(
        f"{PATIENTS}/{seed.consenting}/appointments",
        headers={**seed.bearer("viewer"), "X-Request-ID": "proxy-abc-12345678"},
    )
    odd = api.get(PATIENTS, headers={**seed.bearer("viewer"), "X-Request-ID": "bad id; <script>"})

    request_id = answer.headers["X-Request-ID"]
    assert len(request_id) == 32
    assert given.headers["X-Request-ID"] == "proxy-abc-12345678"
    assert odd.headers["X-Request-ID"] != "bad id; <script>"
    logged = [line["request_id"] for line in captured.lines("http.request")]
    assert logged == [request_id, "proxy-abc-12345678", odd.headers["X-Request-ID"]]
    with Session(pq_app.engine) as session:
        recorded = {e.request_id for e in access_for_patient(session, seed.consenting)}
    assert {request_id, "proxy-abc-12345678"} <= recorded


def test_every_intakeq_request_line_of_a_run_names_the_run_and_the_click(
    pq_app: App, seed: Seed, captured: LogCapture
) -> None:
    api = open_client(pq_app)

    answer = api.post(f"{PATIENTS}/{seed.consenting}/sync", headers=seed.bearer("case_manager"))

    assert answer.status_code == 200, answer.text
    with Session(pq_app.engine) as session:
        (run_id,) = session.scalars(select(SyncLog.id).filter_by(sync_type="patient")).all()
    intakeq = captured.lines("intakeq.request")
    assert intakeq
    assert {(line.get("run_id"), line.get("request_id")) for line in intakeq} == {
        (str(run_id), answer.headers["X-Request-ID"])
    }
