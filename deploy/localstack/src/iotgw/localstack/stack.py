"""The local stack: our own RabbitMQ node and InfluxDB, recorded in a state file.

`up` is idempotent (a running stack is left as it is), `down` stops only what `up` started,
and a port already taken by someone else is a clear error naming it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from iotgw.contracts import settings as defaults
from iotgw.localstack import packages
from iotgw.localstack.influxdb import InfluxNode
from iotgw.localstack.rabbitmq import RabbitEndpoints, RabbitNode

DEBIAN_PACKAGES = ["rabbitmq-server", "influxdb"]


class StackSettings(BaseSettings):
    """Where the local stack keeps its data and which ports it takes (`IOTGW_STACK_*`)."""

    model_config = SettingsConfigDict(env_prefix="IOTGW_STACK_", frozen=True)

    state_dir: Path = Field(default=Path(".state/stack"), description="data, logs, state file")
    amqp_port: int = defaults.LOCAL_AMQP_PORT
    mqtt_port: int = defaults.LOCAL_MQTT_PORT
    management_port: int = defaults.LOCAL_MANAGEMENT_PORT
    dist_port: int = defaults.LOCAL_DIST_PORT
    epmd_port: int = defaults.LOCAL_EPMD_PORT
    influx_port: int = defaults.LOCAL_INFLUX_PORT
    influx_rpc_port: int = defaults.LOCAL_INFLUX_RPC_PORT
    install_packages: bool = True


@dataclass
class Stack:
    """The services of one stack, addressed through its state directory."""

    rabbit: RabbitNode
    influx: InfluxNode
    state_dir: Path

    @classmethod
    def from_settings(cls, cfg: StackSettings) -> Stack:
        """Build the stack the settings describe (nothing is started)."""
        state = cfg.state_dir.resolve()
        endpoints = RabbitEndpoints(
            amqp_port=cfg.amqp_port,
            mqtt_port=cfg.mqtt_port,
            management_port=cfg.management_port,
            dist_port=cfg.dist_port,
            epmd_port=cfg.epmd_port,
            node_name=f"iotgw-{cfg.amqp_port}@localhost",
        )
        return cls(
            rabbit=RabbitNode(state / "rabbitmq", endpoints),
            influx=InfluxNode(state / "influxdb", cfg.influx_port, cfg.influx_rpc_port),
            state_dir=state,
        )

    def up(self, install: bool = True) -> list[str]:
        """Start whatever is not running yet; return what was started."""
        if install:
            packages.ensure(DEBIAN_PACKAGES)
        started = []
        if not self.rabbit.running():
            self.rabbit.start()
            started.append("rabbitmq")
        if self.influx.pid() is None or not self.influx.ping():
            self.influx.start()
            started.append("influxdb")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "env").write_text(
            "".join(f"export {k}={v}\n" for k, v in self.environment().items())
        )
        return started

    def down(self) -> None:
        """Stop both services (only ours: found through our own pid files)."""
        self.rabbit.stop()
        self.influx.stop()

    def status(self) -> dict[str, Any]:
        """What runs, and where."""
        return {
            "rabbitmq": {
                "running": self.rabbit.running(),
                **self.rabbit.endpoints.to_dict(),
                "password": "***",
            },
            "influxdb": {"running": self.influx.ping(), "url": self.influx.url},
            "state_dir": str(self.state_dir),
        }

    def environment(self) -> dict[str, str]:
        """The `IOTGW_*` variables that point every component at this stack."""
        ep = self.rabbit.endpoints
        return {
            "IOTGW_AMQP_URL": ep.amqp_url(),
            "IOTGW_MQTT_HOST": ep.host,
            "IOTGW_MQTT_PORT": str(ep.mqtt_port),
            "IOTGW_RABBITMQ_MANAGEMENT_URL": ep.management_url,
            "IOTGW_INFLUX_URL": self.influx.url,
        }

    def describe(self) -> str:
        """Human-readable endpoints."""
        ep = self.rabbit.endpoints
        return json.dumps(
            {
                "amqp": f"amqp://{ep.host}:{ep.amqp_port}",
                "mqtt": f"mqtt://{ep.host}:{ep.mqtt_port}",
                "rabbitmq_management": ep.management_url,
                "influxdb": self.influx.url,
                "env_file": str(self.state_dir / "env"),
            },
            indent=2,
        )
