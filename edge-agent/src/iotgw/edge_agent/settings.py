"""Settings of the edge agent: a TOML config file, overridden by IOTGW_* environment variables.

`iotgw-agent --config agent.toml` reads the file's keys (the field names below) and lets any
`IOTGW_<FIELD>` variable override them; a wrong value in either fails at start with a message
naming `IOTGW_<FIELD>`.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from iotgw.contracts.credentials import device_username
from iotgw.contracts.names import check_dns_label
from iotgw.contracts.settings import CommonSettings, SettingsError, load_settings


class AgentSettings(CommonSettings):
    """Everything the agent needs; defaults run against the local stack."""

    client: str = Field(description="the customer (DNS label)")
    device: str = Field(description="this module's id (DNS label)")
    mqtt_password: SecretStr = Field(description="this module's secret")
    mqtt_username: str | None = Field(
        default=None, description="defaults to device_username(client, device)"
    )
    mqtt_vhost: str | None = Field(
        default=None, description="RabbitMQ vhost; sent as the `vhost:user` username prefix"
    )
    mqtt_keepalive_s: int = Field(default=30, ge=5, le=3600)
    mqtt_tcp_connect_timeout_s: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="longest a TCP connect may block sampling when the link drops packets",
    )
    mqtt_tls: bool = False
    mqtt_ca_file: Path | None = None
    mqtt_cert_file: Path | None = None
    mqtt_key_file: Path | None = None
    state_dir: Path = Field(default=Path("/var/lib/iotgw-agent"), description="buffer lives here")
    buffer_max_readings: int = Field(default=100_000, ge=10)
    buffer_max_age_s: float = Field(default=7 * 86_400, gt=0)
    buffer_sync: Literal["full", "normal"] = "full"
    sampling_interval_s: float = Field(default=10.0, ge=0.05, le=86_400)
    probe_interval_s: float = Field(default=1.0, ge=0.05)
    sensors: list[str] = Field(default_factory=lambda: ["system"], min_length=1)
    inflight_window: int = Field(default=50, ge=1, le=1000)
    backoff_min_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=60.0, gt=0)
    metrics_port: int = Field(default=0, ge=0, le=65535)

    @model_validator(mode="after")
    def _consistent(self) -> AgentSettings:
        check_dns_label(self.client, "client")
        check_dns_label(self.device, "device")
        for name in ("mqtt_ca_file", "mqtt_cert_file", "mqtt_key_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name}: {path} is not a readable file")
        if self.backoff_max_s < self.backoff_min_s:
            raise ValueError("backoff_max_s must be >= backoff_min_s")
        return self

    @property
    def broker_username(self) -> str:
        """The username sent in CONNECT (with the vhost prefix when one is set)."""
        user = self.mqtt_username or device_username(self.client, self.device)
        return f"{self.mqtt_vhost}:{user}" if self.mqtt_vhost else user

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment first, then the config file's values (passed as init arguments)."""
        return env_settings, init_settings


def load_agent_settings(config_file: Path | None) -> AgentSettings:
    """Read `config_file` (TOML) if given, apply the environment on top, validate."""
    values: dict[str, Any] = {}
    if config_file is not None:
        try:
            values = tomllib.loads(config_file.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"invalid config file {config_file}: {exc}") from exc
    return load_settings(AgentSettings, **values)
