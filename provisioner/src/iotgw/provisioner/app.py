"""Wiring: build the provisioner's parts from its settings, run its workers."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import pika

from iotgw.contracts.topology import DEFAULT_TOPOLOGY, PROVISIONING_QUEUE, Topology
from iotgw.provisioner.brokerusers import BrokerUsers
from iotgw.provisioner.catalog import load_catalog
from iotgw.provisioner.consumer import PurchaseHandler, Worker
from iotgw.provisioner.influx import InfluxStore
from iotgw.provisioner.kube import KubernetesTarget, api_client_from_config
from iotgw.provisioner.manifests import ManifestsTarget
from iotgw.provisioner.metrics import ProvisionerMetrics
from iotgw.provisioner.reconciler import Reconciler
from iotgw.provisioner.settings import ProvisionerSettings
from iotgw.provisioner.targets import Target

log = logging.getLogger(__name__)


def build_target(settings: ProvisionerSettings) -> Target:
    """The configured target: a GitOps folder, or a cluster through server-side apply."""
    if settings.provisioner_target == "kubernetes":
        api = api_client_from_config(settings.kubeconfig, settings.kube_context)
        return KubernetesTarget(api, settings.field_manager, settings.kube_timeout_s)
    return ManifestsTarget(settings.manifests_dir)


def device_vhost(amqp_url: str) -> str:
    """Devices live on the vhost the provisioner consumes from (where amq.topic feeds ingest)."""
    return str(pika.URLParameters(amqp_url).virtual_host)


@dataclass
class Provisioner:
    """The running process: workers sharing one reconciler."""

    settings: ProvisionerSettings
    target: Target
    topology: Topology = field(default=DEFAULT_TOPOLOGY)
    queue_name: str = PROVISIONING_QUEUE

    def __post_init__(self) -> None:
        cfg = self.settings
        self.catalog = load_catalog(cfg.catalog_file)
        self.broker = BrokerUsers(
            cfg.rabbitmq_management_url,
            device_vhost(cfg.amqp_url),
            cfg.rabbitmq_management_user,
            cfg.rabbitmq_management_password,
            cfg.management_timeout_s,
        )
        self.influx = InfluxStore(
            cfg.influx_url,
            cfg.influx_database,
            cfg.influx_retention_policy,
            cfg.influx_retention,
            cfg.influx_timeout_s,
        )
        queue = self.topology.queue(self.queue_name)
        reconciler = Reconciler(
            self.catalog, self.target, self.broker, self.influx, cfg.platform_namespace
        )
        self.metrics = ProvisionerMetrics()
        handler = PurchaseHandler(
            queue, reconciler, self.catalog, self.influx, cfg.platform_namespace, self.metrics
        )
        self.workers = [
            Worker(cfg.amqp_url, queue, handler, cfg.prefetch)
            for _ in range(cfg.provisioner_workers)
        ]
        self.stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def declare_topology(self) -> None:
        """Declare the platform's queues (idempotent), so purchases published early are kept."""
        connection = pika.BlockingConnection(pika.URLParameters(self.settings.amqp_url))
        try:
            self.topology.declare(connection.channel(), self.settings.queue_type)
        finally:
            connection.close()

    def start(self, timeout: float = 30.0) -> None:
        """Start every worker thread and wait until each consumes."""
        self.declare_topology()
        for index, worker in enumerate(self.workers):
            thread = threading.Thread(
                target=worker.run, args=(self.stop,), name=f"provisioner-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        for worker in self.workers:
            if not worker.ready.wait(timeout):
                raise RuntimeError("a provisioner worker did not start consuming")
        log.info("consuming", extra={"queue": self.queue_name, "workers": len(self.workers)})

    def alive(self) -> bool:
        """True while every worker thread runs."""
        return all(t.is_alive() for t in self._threads)

    def close(self) -> None:
        """Stop the workers (unacked purchases return to the queue) and release clients."""
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self.broker.close()
        self.influx.close()
