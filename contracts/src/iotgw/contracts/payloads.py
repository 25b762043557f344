"""Small JSON payloads that devices publish and receive (not the full envelope).

A device message is traced by its client/device/seq, which the topic and payload carry.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from iotgw.contracts.names import DnsLabel

MetricValue = float | int | bool | str


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_json(self) -> bytes:
        """Compact JSON bytes for the wire."""
        return self.model_dump_json(exclude_none=True).encode()


class Telemetry(_Payload):
    """One reading: `{"ts": <unix seconds>, "seq": <per-device counter>, "metrics": {...}}`."""

    ts: float = Field(gt=0, description="device time of the reading, Unix seconds")
    seq: int = Field(ge=0, description="per-device sequence number, monotonic across restarts")
    metrics: dict[str, MetricValue] = Field(min_length=1, max_length=64)

    @field_validator("metrics")
    @classmethod
    def _finite_named(cls, metrics: dict[str, MetricValue]) -> dict[str, MetricValue]:
        for name, value in metrics.items():
            if not name or len(name) > 64 or not name.replace("_", "").isalnum():
                raise ValueError(f"metric name {name!r} must be 1-64 letters, digits or '_'")
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"metric {name!r} must be a finite number")
        return metrics


class Status(_Payload):
    """Presence, retained: `online` after each connect, `offline` as the Last Will.

    `epoch` grows with every connection, so a late `offline` from an old session can be told
    from the `online` of a newer one.
    """

    state: Literal["online", "offline"]
    epoch: int = Field(ge=0)
    ts: float = Field(gt=0)


class DesiredConfig(_Payload):
    """Desired configuration the cloud publishes, retained, on the device's config topic."""

    version: int = Field(ge=1)
    sampling_interval_s: float = Field(default=10.0, ge=0.05, le=86_400)
    enabled_sensors: list[str] | None = Field(
        default=None, description="sensors to read; None means all the device has"
    )
    thresholds: dict[str, float] = Field(
        default_factory=dict,
        description="report a metric early when it moves by more than this since the last report",
    )


class ReportedState(_Payload):
    """What the device reports on its state topic after applying (or refusing) a config."""

    applied_version: int = Field(ge=0, description="version in force; 0 before any config")
    ts: float = Field(gt=0)
    status: Literal["applied", "rejected"] = "applied"
    rejected_version: int | None = None
    reason: str | None = Field(default=None, max_length=1000)


class DeviceCredential(_Payload):
    """A device of a purchase and the RabbitMQ-compatible hash of its secret."""

    id: DnsLabel
    password_hash: str = Field(min_length=8, max_length=200)


class PurchaseData(_Payload):
    """`Data` of a `purchases.<client>.created` (or `.credentials`) event."""

    order_id: str = Field(min_length=1, max_length=64)
    quantity: int = Field(ge=1, le=1000)
    devices: list[DeviceCredential] = Field(default_factory=list, max_length=1000)


class ProvisioningData(_Payload):
    """`Data` of a `provisioning.<client>.ready|failed` event."""

    order_id: str | None = None
    reason: str | None = Field(default=None, max_length=2000)
    applied: list[str] = Field(default_factory=list, description="kind/name of what was applied")
