"""Settings from environment variables: the shared base, the local stack's defaults, fail-fast.

Each process defines its own subclass of `CommonSettings` next to its entry point (prefix
`IOTGW_`) and loads it with `load_settings`, which turns a validation error into an exit message
naming the environment variable at fault. Defaults point at the local stack (`iotgw stack up`).
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

# The local stack's ports: never the standard ones (5672, 1883, 15672, 8086), so a RabbitMQ,
# Mosquitto or InfluxDB already on the machine keeps working.
LOCAL_AMQP_PORT = 5682
LOCAL_MQTT_PORT = 1893
LOCAL_MANAGEMENT_PORT = 15682
LOCAL_DIST_PORT = 25682
LOCAL_EPMD_PORT = 4379
LOCAL_INFLUX_PORT = 8096
LOCAL_INFLUX_RPC_PORT = 8098
LOCAL_VICTORIA_PORT = 8438

S = TypeVar("S", bound=BaseSettings)


class CommonSettings(BaseSettings):
    """Where the backbone is; every process shares these names."""

    model_config = SettingsConfigDict(env_prefix="IOTGW_", extra="ignore", frozen=True)

    amqp_url: str = Field(
        default=f"amqp://guest:guest@127.0.0.1:{LOCAL_AMQP_PORT}/%2F",
        description="RabbitMQ AMQP URL (pika URLParameters form)",
    )
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = Field(default=LOCAL_MQTT_PORT, ge=1, le=65535)
    rabbitmq_management_url: str = f"http://127.0.0.1:{LOCAL_MANAGEMENT_PORT}"
    influx_url: str = f"http://127.0.0.1:{LOCAL_INFLUX_PORT}"
    queue_type: Literal["classic", "quorum"] = "classic"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class SettingsError(SystemExit):
    """Raised at start when a setting is wrong; its message names the variable."""


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Instantiate `cls` from the environment; on error exit with a message naming each variable."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        prefix = str(cls.model_config.get("env_prefix", ""))
        problems = []
        for err in exc.errors(include_url=False):
            if err["loc"]:
                problems.append(f"{prefix}{str(err['loc'][0]).upper()}: {err['msg']}")
            else:
                # A check across settings names its variables in its own message.
                problems.append(str(err["msg"]).removeprefix("Value error, "))
        raise SettingsError("invalid setting: " + "; ".join(problems)) from exc
