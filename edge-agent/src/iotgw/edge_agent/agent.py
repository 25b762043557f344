"""The agent process: one device, its buffer, its session, on a single-device `NetLoop`."""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path
from types import FrameType

from iotgw.contracts.jsonlog import configure_logging
from iotgw.contracts.settings import SettingsError
from iotgw.edge_agent.buffer import BufferLimits, Store
from iotgw.edge_agent.device import DeviceCore, DeviceIdentity
from iotgw.edge_agent.metrics import serve_metrics
from iotgw.edge_agent.netloop import NetLoop
from iotgw.edge_agent.sensors import UnknownSensorError, load_sensors
from iotgw.edge_agent.session import LinkSettings, MqttSession, TlsFiles
from iotgw.edge_agent.settings import AgentSettings, load_agent_settings

log = logging.getLogger("iotgw.edge_agent")

STATS_LOG_INTERVAL_S = 60.0
STOP_GRACE_S = 5.0
DB_FILE = "agent.db"


def link_settings(settings: AgentSettings) -> LinkSettings:
    """The session's view of the settings."""
    tls = None
    if settings.mqtt_tls:
        tls = TlsFiles(settings.mqtt_ca_file, settings.mqtt_cert_file, settings.mqtt_key_file)
    return LinkSettings(
        host=settings.mqtt_host,
        port=settings.mqtt_port,
        username=settings.broker_username,
        password=settings.mqtt_password.get_secret_value(),
        keepalive_s=settings.mqtt_keepalive_s,
        tls=tls,
        window=settings.inflight_window,
        backoff_min_s=settings.backoff_min_s,
        backoff_max_s=settings.backoff_max_s,
        tcp_connect_timeout_s=settings.mqtt_tcp_connect_timeout_s,
    )


class Agent:
    """Wires settings, buffer, sensors, device core and MQTT session together."""

    def __init__(self, settings: AgentSettings) -> None:
        try:
            sensors = load_sensors(settings.sensors)
        except UnknownSensorError as exc:
            raise SettingsError(f"invalid setting: IOTGW_SENSORS: {exc}") from exc
        self.settings = settings
        self.identity = DeviceIdentity(settings.client, settings.device)
        self.store = Store(settings.state_dir / DB_FILE, settings.buffer_sync)
        buffer = self.store.device(
            self.identity.client_id,
            BufferLimits(settings.buffer_max_readings, settings.buffer_max_age_s),
        )
        self.core = DeviceCore(
            self.identity,
            buffer,
            sensors,
            settings.sampling_interval_s,
            settings.probe_interval_s,
        )
        self.loop = NetLoop()
        self.loop.after_iteration.append(self.store.flush_acks)
        self.session = MqttSession(self.core, link_settings(settings), self.loop)
        self._stop_requested = False

    def collect(self) -> dict[str, float]:
        """Counters for /metrics (plain attributes: safe from the metrics thread)."""
        stats = self.session.stats
        return {
            "iotgw_agent_readings_total": stats.sampled,
            "iotgw_agent_sent_total": stats.sent,
            "iotgw_agent_acked_total": stats.acked,
            "iotgw_agent_connects_total": stats.connects,
            "iotgw_agent_disconnects_total": stats.disconnects,
            "iotgw_agent_connected": float(self.session.connected),
            "iotgw_agent_configs_rejected_total": stats.configs_rejected,
            "iotgw_agent_config_version": self.core.config.applied_version,
        }

    def _log_stats(self) -> None:
        overflow, expired = self.core.buffer.dropped()
        log.info(
            "buffer",
            extra={
                "buffered": self.core.buffer.count(),
                "next_seq": self.core.buffer.next_seq(),
                "dropped_overflow": overflow,
                "dropped_expired": expired,
                "acked": self.session.stats.acked,
                "connected": self.session.connected,
            },
        )
        self.loop.call_later(STATS_LOG_INTERVAL_S, self._log_stats)

    def stop(self) -> None:
        """Clean stop: `offline`, DISCONNECT, then the loop ends (at the latest after a grace)."""
        self.session.stop()
        self.loop.call_later(STOP_GRACE_S, self.loop.stop)

    def request_stop(self) -> None:
        """Ask for a clean stop from a signal handler: only a flag, which `run` reads on the
        loop's own stack (a handler that touched the loop's timers mid-iteration could corrupt
        them: a fault drill's SIGTERM hit `list changed size during iteration`)."""
        self._stop_requested = True

    def run(self) -> None:
        """Run until stopped."""
        log.info(
            "agent starting",
            extra={
                "device": self.identity.client_id,
                "buffered": self.core.buffer.count(),
                "next_seq": self.core.buffer.next_seq(),
                "config_version": self.core.config.applied_version,
            },
        )
        self.session.start()
        self._log_stats()
        try:
            self.loop.run(until=lambda: self.session.closed or self._stop_requested)
            if self._stop_requested and not self.session.closed:
                self.stop()
                self.loop.run(until=lambda: self.session.closed)
        finally:
            self.store.close()
            self.loop.close()
        log.info("agent stopped", extra={"acked": self.session.stats.acked})


def main(argv: list[str] | None = None) -> None:
    """`iotgw-agent [--config agent.toml]`."""
    parser = argparse.ArgumentParser(prog="iotgw-agent", description=__doc__)
    parser.add_argument("--config", type=Path, help="TOML file; IOTGW_* variables override it")
    args = parser.parse_args(argv)
    settings = load_agent_settings(args.config)
    configure_logging(settings.log_level)
    agent = Agent(settings)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        agent.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if settings.metrics_port:
        serve_metrics(settings.metrics_port, agent.collect)
    agent.run()
