"""Liveness, readiness (database and broker reachable) and Prometheus metrics."""

from __future__ import annotations

import pika
import pika.exceptions
from fastapi import APIRouter, Response, status
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from iotgw.cloud_bridge.api.auth import StateDep
from iotgw.cloud_bridge.api.state import ApiState
from iotgw.cloud_bridge.registry import repository as repo

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


def _database_ok(state: ApiState) -> bool:
    try:
        with state.sessions() as session:
            session.execute(text("SELECT 1"))
    except SQLAlchemyError:
        return False
    return True


def _broker_ok(url: str) -> bool:
    params = pika.URLParameters(url)
    params.connection_attempts = 1
    params.socket_timeout = 2
    params.blocked_connection_timeout = 2
    try:
        pika.BlockingConnection(params).close()
    except (pika.exceptions.AMQPError, OSError):
        return False
    return True


@router.get("/readyz")
def readyz(response: Response, state: StateDep) -> dict[str, str]:
    """503 unless both the registry database and the broker answer."""
    checks = {
        "database": "ok" if _database_ok(state) else "unreachable",
        "broker": "ok" if _broker_ok(state.settings.amqp_url) else "unreachable",
    }
    if any(v != "ok" for v in checks.values()):
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return checks


@router.get("/metrics", include_in_schema=False)
def metrics(state: StateDep) -> Response:
    """Prometheus text format, the outbox backlog read fresh."""
    try:
        with state.sessions() as session:
            state.metrics.outbox_backlog.set(repo.outbox_backlog(session))
    except SQLAlchemyError:
        state.metrics.outbox_backlog.set(float("nan"))
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
