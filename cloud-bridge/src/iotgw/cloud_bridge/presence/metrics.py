"""Prometheus metrics of the presence process, in a registry per instance (no globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class PresenceMetrics:
    """Messages by queue and outcome, dead letters, pauses, PUBACK latency."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.messages = Counter(
            "iotgw_presence_messages",
            "Status/state/config messages handled, by queue and outcome",
            ["queue", "outcome"],
            registry=self.registry,
        )
        self.dead_lettered = Counter(
            "iotgw_presence_dead_lettered",
            "Messages dead-lettered, by queue and reason category",
            ["queue", "reason"],
            registry=self.registry,
        )
        self.pauses = Counter(
            "iotgw_presence_pauses",
            "Deliveries handed back because a dependency was down, by dependency",
            ["queue", "dependency"],
            registry=self.registry,
        )
        self.puback_seconds = Histogram(
            "iotgw_presence_config_puback_seconds",
            "Retained config publish to PUBACK",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
            registry=self.registry,
        )
