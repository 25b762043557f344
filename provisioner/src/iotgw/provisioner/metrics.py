"""The provisioner's Prometheus metrics, in a registry of their own (no import-time state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class ProvisionerMetrics:
    """Outcomes by kind and the delivery -> status latency."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.outcomes = Counter(
            "iotgw_provisioner_outcomes",
            "Purchases handled, by outcome (ready, failed, cancelled, retried)",
            ["outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "iotgw_provisioner_latency_seconds",
            "Delivery to status published",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
            registry=self.registry,
        )
