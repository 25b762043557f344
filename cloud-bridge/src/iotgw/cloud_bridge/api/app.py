"""The FastAPI application: routers, error handlers, request metrics, shared state."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request, Response
from sqlalchemy.orm import Session, sessionmaker

from iotgw.cloud_bridge.api import errors
from iotgw.cloud_bridge.api.metrics import ApiMetrics
from iotgw.cloud_bridge.api.routers import devices, health, operator, orders
from iotgw.cloud_bridge.api.settings import ApiSettings
from iotgw.cloud_bridge.api.state import ApiState
from iotgw.cloud_bridge.web import pages


def create_app(
    settings: ApiSettings,
    sessions: sessionmaker[Session],
    *,
    metrics: ApiMetrics | None = None,
    outbox_written: Callable[[], None] | None = None,
) -> FastAPI:
    """Build the app on an existing session factory (migrations are the caller's business)."""
    api_metrics = metrics or ApiMetrics()
    influx = httpx.Client(base_url=settings.influx_url, timeout=5)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        influx.close()

    app = FastAPI(
        title="iotgw purchase and device API",
        version="1",
        description="Buy modules, follow their provisioning, manage devices. "
        "Authenticate with `Authorization: Bearer <api key>`.",
        lifespan=lifespan,
    )
    app.state.api = ApiState(
        settings=settings,
        sessions=sessions,
        metrics=api_metrics,
        influx=influx,
        outbox_written=outbox_written or (lambda: None),
    )
    errors.install(app)
    for router in (orders.router, devices.router, operator.router, health.router):
        app.include_router(router)
    pages.install(app)

    @app.middleware("http")
    async def measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        api_metrics.requests.labels(template, request.method, str(response.status_code)).inc()
        api_metrics.latency.labels(template).observe(time.perf_counter() - started)
        return response

    return app
