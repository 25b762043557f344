"""`iotgw-ingest`: telemetry from q.telemetry into InfluxDB, until SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import pika.exceptions

from iotgw.cloud_bridge.ingest.consumer import IngestConsumer
from iotgw.cloud_bridge.ingest.health import IngestMetrics
from iotgw.cloud_bridge.ingest.settings import IngestSettings
from iotgw.cloud_bridge.ingest.writers import LineWriter, WriteUnavailableError, make_writer
from iotgw.contracts.jsonlog import configure_logging
from iotgw.contracts.settings import load_settings

log = logging.getLogger("iotgw.ingest")


def run(settings: IngestSettings, stop: threading.Event, metrics: IngestMetrics) -> None:
    """Ensure the database, then consume, reconnecting with backoff, until `stop` is set."""
    writer = make_writer(settings)
    try:
        _ensure_database(writer, settings, stop)
        delay = settings.ingest_retry_initial_s
        while not stop.is_set():
            try:
                IngestConsumer(settings, writer, metrics).run(stop)
                delay = settings.ingest_retry_initial_s
            except pika.exceptions.AMQPError as exc:
                # Unacked messages go back to the queue with the connection; nothing is lost.
                log.warning("amqp connection lost, reconnecting in %.1f s: %r", delay, exc)
                stop.wait(delay)
                delay = min(delay * 2, settings.ingest_retry_max_s)
    finally:
        writer.close()


def _ensure_database(writer: LineWriter, settings: IngestSettings, stop: threading.Event) -> None:
    delay = settings.ingest_retry_initial_s
    while not stop.is_set():
        try:
            writer.ensure_database()
            return
        except WriteUnavailableError as exc:
            log.warning("influxdb not ready, retrying in %.1f s: %s", delay, exc)
            stop.wait(delay)
            delay = min(delay * 2, settings.ingest_retry_max_s)


def main() -> None:
    """Entry point of `iotgw-ingest`."""
    settings = load_settings(IngestSettings)
    configure_logging(settings.log_level)
    metrics = IngestMetrics()
    if settings.metrics_port:
        metrics.serve(settings.metrics_port)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("stopping", extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info(
        "ingest starting",
        extra={
            "influx_url": settings.influx_url,
            "influx_api": settings.influx_api,
            "database": settings.influx_database,
            "queue": settings.ingest_queue,
        },
    )
    run(settings, stop, metrics)
    log.info("ingest stopped")


if __name__ == "__main__":
    main()
