"""`iotgw-api`: the HTTP API, the outbox relay and the order-status consumer.

`iotgw-api` runs all three in one process (threads); `iotgw-api serve|relay|status-consumer`
runs one of them, so each can be scaled or deployed apart; `iotgw-api migrate` only upgrades
the database. Several relays may run against PostgreSQL (rows are claimed with SKIP LOCKED).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

import uvicorn
from prometheus_client import start_http_server
from sqlalchemy.orm import Session, sessionmaker

from iotgw.cloud_bridge.api.app import create_app
from iotgw.cloud_bridge.api.metrics import ApiMetrics
from iotgw.cloud_bridge.api.settings import ApiSettings
from iotgw.cloud_bridge.orderstatus.consumer import StatusConsumer
from iotgw.cloud_bridge.outbox.relay import OutboxRelay
from iotgw.cloud_bridge.registry.database import make_engine, migrate, session_factory
from iotgw.contracts.jsonlog import configure_logging
from iotgw.contracts.settings import load_settings

COMMANDS = ("all", "serve", "relay", "status-consumer", "migrate")


@dataclass
class Workers:
    """The background loops of the api process, each in its own thread."""

    relay: OutboxRelay | None = None
    consumer: StatusConsumer | None = None
    threads: list[threading.Thread] = field(default_factory=list)

    @classmethod
    def build(
        cls,
        settings: ApiSettings,
        sessions: sessionmaker[Session],
        metrics: ApiMetrics,
        *,
        relay: bool = True,
        consumer: bool = True,
    ) -> Workers:
        """Create (not start) the relay and/or the consumer."""
        return cls(
            relay=OutboxRelay(
                sessions,
                settings.amqp_url,
                poll_interval=settings.outbox_poll_interval_s,
                queue_type=settings.queue_type,
                on_published=metrics.outbox_published.inc,
            )
            if relay
            else None,
            consumer=StatusConsumer(
                sessions,
                settings.amqp_url,
                queue_type=settings.queue_type,
                on_applied=lambda _event: metrics.status_events.inc(),
            )
            if consumer
            else None,
        )

    def start(self) -> None:
        """Start each loop in a daemon thread."""
        loops: list[tuple[str, Callable[[], None]]] = []
        if self.relay is not None:
            loops.append(("outbox-relay", self.relay.run))
        if self.consumer is not None:
            loops.append(("status-consumer", self.consumer.run))
        for name, target in loops:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self, timeout: float = 10) -> None:
        """Stop the loops and wait for them."""
        if self.relay is not None:
            self.relay.stop()
        if self.consumer is not None:
            self.consumer.stop()
        for thread in self.threads:
            thread.join(timeout)

    @property
    def wake_relay(self) -> Callable[[], None] | None:
        """The relay's wake-up, for the app to call after writing outbox rows."""
        return self.relay.wake if self.relay is not None else None


def _wait_for_signal() -> None:
    done = threading.Event()

    def _handler(_signum: int, _frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)
    done.wait()


def main(argv: list[str] | None = None) -> int:
    """Entry point of `iotgw-api`."""
    parser = argparse.ArgumentParser(prog="iotgw-api", description=__doc__)
    parser.add_argument("command", nargs="?", default="all", choices=COMMANDS)
    args = parser.parse_args(argv)
    settings = load_settings(ApiSettings)
    configure_logging(settings.log_level)
    engine = make_engine(settings.database_url)
    if settings.migrate_on_start or args.command == "migrate":
        migrate(engine)
    if args.command == "migrate":
        return 0
    sessions = session_factory(engine)
    metrics = ApiMetrics()
    workers = Workers.build(
        settings,
        sessions,
        metrics,
        relay=args.command in {"all", "relay"},
        consumer=args.command in {"all", "status-consumer"},
    )
    workers.start()
    if settings.metrics_port:
        start_http_server(settings.metrics_port, registry=metrics.registry)
    try:
        if args.command in {"all", "serve"}:
            app = create_app(settings, sessions, metrics=metrics, outbox_written=workers.wake_relay)
            uvicorn.run(
                app,
                host=settings.api_host,
                port=settings.api_port,
                log_config=None,
                access_log=False,
            )
        else:
            _wait_for_signal()
    finally:
        workers.stop()
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
