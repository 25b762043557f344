"""What the routers share, held on `app.state.api`: no module-level mutable state."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from fastapi import Request
from sqlalchemy.orm import Session, sessionmaker

from iotgw.cloud_bridge.api.metrics import ApiMetrics
from iotgw.cloud_bridge.api.settings import ApiSettings


@dataclass
class ApiState:
    """The registry sessions, settings, metrics, InfluxDB client and the outbox wake-up."""

    settings: ApiSettings
    sessions: sessionmaker[Session]
    metrics: ApiMetrics
    influx: httpx.Client
    # Called after a commit that wrote outbox rows, so the relay publishes at once.
    outbox_written: Callable[[], None] = field(default=lambda: None)


def api_state(request: Request) -> ApiState:
    """FastAPI dependency: the app's shared state."""
    state: ApiState = request.app.state.api
    return state
