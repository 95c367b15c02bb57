"""Operations: health (public) and Prometheus metrics (behind PQSYNC_METRICS_TOKEN)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from pqsync.web.deps import ContextDep, MetricsCaller, SessionDep
from pqsync.web.errors import ApiError, responses
from pqsync.web.schemas import HealthOut

router = APIRouter(tags=["operations"])


@router.get("/healthz", responses=responses(503))
def healthz(session: SessionDep) -> HealthOut:
    """200 when the database answers."""
    try:
        session.execute(text("select 1"))
    except SQLAlchemyError:
        raise ApiError(503, "unavailable", "the database does not answer") from None
    return HealthOut(status="ok", database="ok")


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
    """Prometheus text format: HTTP requests by route and status, sync runs by outcome.
    `Authorization: Bearer $PQSYNC_METRICS_TOKEN`; 404 when no token is configured."""
    return Response(ctx.metrics.render(), media_type=CONTENT_TYPE_LATEST)
