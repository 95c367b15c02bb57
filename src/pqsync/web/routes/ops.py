"""Operations: health (public) and Prometheus metrics (behind PQSYNC_METRICS_TOKEN)."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy.orm import Session

from pqsync.bootstrap import App
from pqsync.intakeq.budget import key_fingerprint
from pqsync.services import health, verify
from pqsync.settings import SettingsError
from pqsync.web.deps import ContextDep, MetricsCaller, OperationsReader, SessionDep
from pqsync.web.errors import responses
from pqsync.web.schemas import HealthOut, OrganizationHealthOut, WorkerHealthOut

router = APIRouter(tags=["operations"])


@router.get(
    "/healthz",
    response_model=HealthOut,
    response_model_exclude_none=True,
    responses={503: {"model": HealthOut, "description": "Down: see `status`."}},
)
def healthz(ctx: ContextDep, session: SessionDep, details: OperationsReader) -> JSONResponse:
    """`{"status": "ok"}` (200) when the database answers and a queue worker finished a tick
    within the last two minutes, else `{"status": "down"}` (503). Staff and the metrics token
    also get the details: the worker's last heartbeat, the queue, each organisation's last
    good sync."""
    database = health.database_answers(session)
    session.commit()
    engine = ctx.app.engine
    seen = health.worker_last_seen(engine) if database else None
    alive = seen is not None and ctx.now() - seen <= health.WORKER_SEEN_WITHIN
    up = database and alive
    answer = HealthOut(status="ok" if up else "down")
    if details:
        answer.database = "ok" if database else "down"
        answer.worker = WorkerHealthOut(
            alive=alive,
            last_seen_at=seen,
            seen_within_seconds=int(health.WORKER_SEEN_WITHIN.total_seconds()),
        )
        if database:
            answer.queue_depth = ctx.app.jobs.pending()
            answer.organizations = [
                OrganizationHealthOut(slug=org.slug, last_successful_sync_at=org.last_success_at)
                for org in health.organizations_last_success(engine)
            ]
    body = {k: v for k, v in answer.model_dump(mode="json", by_alias=True).items() if v is not None}
    return JSONResponse(
        body,
        status_code=200 if up else 503,
        headers={"Cache-Control": "no-store"},
    )


@router.get(
    "/metrics",
    dependencies=[MetricsCaller],
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        **responses(401, 404),
    },
)
def metrics(ctx: ContextDep) -> Response:
    """Prometheus text format: HTTP requests by route and status, sync runs by type and
    outcome, age of the last good nightly run, queue depth, the day's IntakeQ requests.
    `Authorization: Bearer $PQSYNC_METRICS_TOKEN`; 404 when no token is configured."""
    return Response(ctx.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def accuracy_metrics(app: App) -> Iterator[Metric]:
    """The newest `pqsync verify` that measured something (NaN: never measured)."""
    with Session(app.engine) as session:
        measured = verify.latest(session)
    nan = float("nan")
    found = measured.missing + measured.extra + measured.stale if measured else 0
    compared = measured.compared if measured else 0
    yield GaugeMetricFamily(
        "pqsync_accuracy_ratio",
        "Share of compared appointments whose stored copy matches IntakeQ (0 to 1).",
        value=(compared - found) / compared if compared else (1.0 if measured else nan),
    )
    yield GaugeMetricFamily(
        "pqsync_accuracy_compared",
        "Appointments the newest verification compared.",
        value=compared if measured else nan,
    )
    kinds = GaugeMetricFamily(
        "pqsync_accuracy_discrepancies",
        "Appointments the newest verification found differing, by kind.",
        labels=["kind"],
    )
    if measured is not None:
        for kind in ("missing", "extra", "stale"):
            kinds.add_metric([kind], getattr(measured, kind))
    yield kinds
    yield GaugeMetricFamily(
        "pqsync_accuracy_age_seconds",
        "Seconds since the newest verification that measured something began.",
        value=(app.clock() - measured.started_at).total_seconds() if measured else nan,
    )


def operational_metrics(app: App) -> Iterator[Metric]:
    """Gauges read from the database and the queue at each scrape."""
    now = app.clock()
    engine = app.engine
    seen = health.worker_last_seen(engine)
    yield GaugeMetricFamily(
        "pqsync_worker_last_heartbeat_age_seconds",
        "Seconds since a queue worker last finished its minute tick (NaN: never).",
        value=(now - seen).total_seconds() if seen is not None else float("nan"),
    )
    yield GaugeMetricFamily(
        "pqsync_worker_last_heartbeat_timestamp_seconds",
        "When a queue worker last finished its minute tick (Unix time; NaN: never).",
        value=seen.timestamp() if seen is not None else float("nan"),
    )
    nightly = health.last_nightly_success(engine)
    yield GaugeMetricFamily(
        "pqsync_last_nightly_success_age_seconds",
        "Seconds since the last successful nightly run finished (NaN: never).",
        value=(now - nightly).total_seconds() if nightly is not None else float("nan"),
    )
    runs = GaugeMetricFamily(
        "pqsync_runs", "Sync runs recorded, by type and outcome.", labels=["type", "status"]
    )
    for (run_type, status), count in sorted(health.runs_by_type_and_outcome(engine).items()):
        runs.add_metric([run_type, status], count)
    yield runs
    yield from accuracy_metrics(app)
    yield GaugeMetricFamily(
        "pqsync_queue_depth", "Jobs waiting in the queue.", value=app.jobs.pending()
    )
    events = GaugeMetricFamily(
        "pqsync_webhook_events",
        "IntakeQ webhook events in the last 24 hours, by what became of them "
        "(queued, coalesced, limited, foreign practice, ignored, failed: re-fetch given up).",
        labels=["outcome"],
    )
    for outcome, count in app.jobs.webhook_gate().counts_today().items():
        events.add_metric([outcome], count)
    yield events
    try:
        fingerprint = key_fingerprint(app.settings.intakeq_key())
    except SettingsError:
        return
    used = health.requests_in_last_day(engine, fingerprint, now)
    limit = app.settings.intakeq_daily_limit
    yield GaugeMetricFamily(
        "pqsync_intakeq_requests_used",
        "IntakeQ requests sent in the last 24 hours (the daily budget's window).",
        value=used,
    )
    yield GaugeMetricFamily(
        "pqsync_intakeq_requests_left",
        "IntakeQ requests left in the daily budget.",
        value=max(0, limit - used),
    )
