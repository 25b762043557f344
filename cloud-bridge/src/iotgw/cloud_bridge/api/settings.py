"""Settings of the api process (`iotgw-api`), from IOTGW_* environment variables."""

from __future__ import annotations

from pydantic import Field, SecretStr

from iotgw.contracts.settings import CommonSettings

DEFAULT_DATABASE_URL = "sqlite:///.state/registry.db"


class ApiSettings(CommonSettings):
    """HTTP listener, registry database, operator key, InfluxDB database, background loops."""

    api_host: str = Field(default="127.0.0.1", description="listen address (0.0.0.0 in pods)")
    api_port: int = Field(default=8000, ge=1, le=65535)
    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        description="SQLAlchemy URL: SQLite file (default) or postgresql+psycopg://...",
    )
    operator_key: SecretStr | None = Field(
        default=None, description="key of the operator endpoints; unset means they refuse"
    )
    influx_database: str = Field(default="iotgw", min_length=1, max_length=64)
    metrics_port: int = Field(default=0, ge=0, le=65535, description="0 = off")
    outbox_poll_interval_s: float = Field(default=1.0, gt=0, le=60)
    sse_poll_interval_s: float = Field(default=0.5, gt=0, le=10)
    migrate_on_start: bool = True
