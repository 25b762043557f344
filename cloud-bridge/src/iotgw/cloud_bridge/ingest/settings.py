"""Settings of the `iotgw-ingest` process (environment variables, prefix IOTGW_)."""

from __future__ import annotations

import re
import socket
from typing import Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator

from iotgw.contracts.settings import CommonSettings
from iotgw.contracts.topology import TELEMETRY_QUEUE

DATABASE_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
THIRTY_DAYS_S = 30 * 86_400


class IngestSettings(CommonSettings):
    """Where telemetry comes from and goes to, and how the ingest batches it."""

    influx_api: Literal["v1", "v2"] = Field(
        default="v1",
        description="v1: POST /write (InfluxDB 1.x/2.x/3.x); v2: influxdb-client, token/org/bucket",
    )
    influx_database: str = Field(
        default="iotgw", description="v1 database shared by all clients (tag `client` keys them)"
    )
    influx_username: str | None = None
    influx_password: SecretStr | None = None
    influx_token: SecretStr | None = None
    influx_org: str | None = None
    influx_bucket: str | None = None
    influx_timeout_s: float = Field(default=10.0, gt=0)

    ingest_queue: str = TELEMETRY_QUEUE
    # Tuned with bench/bench_ingest.py: 5000-line writes are InfluxDB's sweet spot, and a
    # prefetch of four batches keeps one batch filling while others are written and acked.
    ingest_prefetch: int = Field(
        default=20_000, ge=1, le=65_535, description="unacked deliveries the broker may hand us"
    )
    ingest_batch_size: int = Field(default=5000, ge=1, description="points per write, at most")
    ingest_batch_interval_ms: int = Field(
        default=100, ge=1, description="a partial batch is written after this long"
    )
    ingest_max_future_skew_s: float = Field(
        default=300.0, gt=0, description="device time further ahead than this is replaced"
    )
    ingest_max_past_s: float = Field(
        default=THIRTY_DAYS_S, gt=0, description="device time older than this is replaced"
    )
    ingest_retry_initial_s: float = Field(default=0.2, gt=0)
    ingest_retry_max_s: float = Field(default=5.0, gt=0)
    ingest_depth_interval_s: float = Field(
        default=2.0, gt=0, description="how often the queue depth (consumer lag) is sampled"
    )
    ingest_instance: str = Field(default_factory=socket.gethostname, min_length=1)
    metrics_port: int = Field(default=0, ge=0, le=65535, description="Prometheus; 0 = off")

    @field_validator("influx_database")
    @classmethod
    def _database_name(cls, value: str) -> str:
        if not DATABASE_RE.fullmatch(value):
            raise ValueError("must be 1-64 letters, digits, '_' or '-'")
        return value

    @model_validator(mode="after")
    def _v2_complete(self) -> Self:
        if self.influx_api == "v2":
            missing = [
                f"IOTGW_INFLUX_{name.upper()}"
                for name in ("token", "org", "bucket")
                if not getattr(self, f"influx_{name}")
            ]
            if missing:
                raise ValueError("IOTGW_INFLUX_API=v2 needs " + ", ".join(missing))
        return self
