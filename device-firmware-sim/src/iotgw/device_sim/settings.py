"""Settings of the simulator: IOTGW_* environment variables, overridden by command-line flags.

The broker coordinates are the shared ones (`IOTGW_MQTT_HOST`, `IOTGW_MQTT_PORT`); the rest are
`IOTGW_SIM_*`. A wrong value fails at start naming the variable.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from iotgw.contracts.names import check_dns_label
from iotgw.contracts.settings import CommonSettings


class SimSettings(CommonSettings):
    """What the simulator runs and how hard it pushes."""

    sim_client: str = "sim"
    sim_prefix: str = "m"
    sim_count: int = Field(default=10, ge=1, le=20_000)
    sim_rate_hz: float = Field(default=1.0, gt=0, le=100, description="readings/s per module")
    sim_jitter: float = Field(default=0.1, ge=0, lt=1, description="+/- fraction of the interval")
    sim_duration_s: float = Field(default=30.0, gt=0)
    sim_secret: SecretStr | None = Field(
        default=None, description="fleet secret the module passwords derive from"
    )
    sim_credentials: Path | None = Field(
        default=None,
        validate_default=True,
        description="JSON list of {client, device, secret}: run exactly these modules "
        "(e.g. the ones a purchase issued) instead of a derived fleet",
    )
    sim_vhost: str | None = None
    sim_state_dir: Path | None = Field(default=None, description="default: a temporary folder")
    sim_window: int = Field(default=20, ge=1, le=1000)
    sim_keepalive_s: int = Field(default=60, ge=5)
    sim_connect_parallel: int = Field(default=200, ge=1, le=5000)
    sim_time_scale: float = Field(default=1.0, gt=0)
    sim_drain_timeout_s: float = Field(default=60.0, ge=0)
    sim_provision: bool = Field(default=False, description="create the modules' broker users")
    sim_admin_user: str = Field(default="guest", description="management API user for provision")
    sim_admin_password: SecretStr = Field(default=SecretStr("guest"))
    metrics_port: int = Field(default=0, ge=0, le=65535)

    @field_validator("sim_credentials")
    @classmethod
    def _secret_or_credentials(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        # A field check (not a model one), so it is reported beside any other wrong setting.
        if value is None and info.data.get("sim_secret") is None:
            raise ValueError("a fleet secret (IOTGW_SIM_SECRET) is required without this file")
        return value

    @model_validator(mode="after")
    def _who(self) -> SimSettings:
        if self.sim_credentials is not None and self.sim_provision:
            raise ValueError(
                "IOTGW_SIM_PROVISION: modules with issued credentials are provisioned by the "
                "provisioner, not the simulator"
            )
        if self.sim_credentials is not None and not self.sim_credentials.is_file():
            raise ValueError(f"IOTGW_SIM_CREDENTIALS: {self.sim_credentials} is not a file")
        return self

    @field_validator("sim_client")
    @classmethod
    def _label(cls, value: str) -> str:
        return check_dns_label(value, "sim_client")

    @field_validator("sim_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        check_dns_label(f"{value}-1", "sim_prefix")
        return value
