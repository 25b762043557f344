"""Prometheus metrics of the api, in a registry per app instance (no global collectors)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ApiMetrics:
    """Request counts and latencies per route, orders, outbox and status events."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "iotgw_api_requests",
            "HTTP requests by route template, method and status code",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "iotgw_api_request_seconds",
            "HTTP request latency by route template",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.orders = Counter(
            "iotgw_api_orders_created", "Orders created (retries excluded)", registry=self.registry
        )
        self.outbox_published = Counter(
            "iotgw_outbox_published",
            "Outbox messages confirmed by the broker",
            registry=self.registry,
        )
        self.outbox_backlog = Gauge(
            "iotgw_outbox_backlog",
            "Outbox messages waiting to be published",
            registry=self.registry,
        )
        self.status_events = Counter(
            "iotgw_api_status_events", "Provisioning status events applied", registry=self.registry
        )
