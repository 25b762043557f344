"""Settings of the `iotgw-presence` process (environment variables, prefix IOTGW_)."""

from __future__ import annotations

import socket

from pydantic import Field, SecretStr

from iotgw.cloud_bridge.api.settings import DEFAULT_DATABASE_URL
from iotgw.contracts.settings import CommonSettings


class PresenceSettings(CommonSettings):
    """The registry database, the MQTT service identity, consumer tuning."""

    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        description="the registry the api uses: SQLite file or postgresql+psycopg://...",
    )
    presence_mqtt_username: str = Field(
        default="guest",
        min_length=1,
        description="service identity publishing retained configs ('vhost:user' picks a vhost)",
    )
    presence_mqtt_password: SecretStr = Field(default=SecretStr("guest"))
    presence_mqtt_client_id: str = Field(
        default_factory=lambda: f"iotgw-presence-{socket.gethostname()}"[:64],
        min_length=1,
        max_length=64,
        description="unique per replica: a second connection with the same id evicts the first",
    )
    presence_prefetch: int = Field(default=200, ge=1, le=65_535)
    presence_puback_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="how long to wait for the broker's PUBACK"
    )
    presence_retry_initial_s: float = Field(default=0.2, gt=0)
    presence_retry_max_s: float = Field(default=5.0, gt=0)
    metrics_port: int = Field(default=0, ge=0, le=65535, description="Prometheus; 0 = off")
