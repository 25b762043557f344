"""The domain: what a validated purchase does to the client's stack (no AMQP here).

`handle` is idempotent: applying a purchase again re-applies the same objects, users and
storage, which changes nothing. It raises TransientError (worth a retry) or PermanentError.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from iotgw.contracts.topics import PurchaseAction
from iotgw.provisioner.brokerusers import BrokerUsers
from iotgw.provisioner.catalog import Catalog
from iotgw.provisioner.influx import InfluxStore
from iotgw.provisioner.render import render_stack
from iotgw.provisioner.request import PurchaseRequest
from iotgw.provisioner.targets import Target

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Applied:
    """What a request changed (Kind/name of each item), for the status event."""

    action: PurchaseAction
    items: tuple[str, ...]


class Reconciler:
    """Applies purchases to a target, the broker and InfluxDB."""

    def __init__(
        self,
        catalog: Catalog,
        target: Target,
        broker: BrokerUsers,
        influx: InfluxStore,
        platform_namespace: str,
    ) -> None:
        self.catalog = catalog
        self.target = target
        self.broker = broker
        self.influx = influx
        self.platform_namespace = platform_namespace

    def handle(self, request: PurchaseRequest) -> Applied:
        """Provision, update credentials, or remove, as the request's action says."""
        if request.action is PurchaseAction.CANCELLED:
            return Applied(request.action, tuple(self.cancel(request.client)))
        if request.action is PurchaseAction.CREDENTIALS:
            items = self.broker.ensure_devices(request.client, request.devices)
            return Applied(request.action, tuple(items))
        return Applied(request.action, tuple(self.provision(request)))

    def provision(self, request: PurchaseRequest) -> list[str]:
        """Storage first, then the workload, then the credentials that let devices in."""
        applied = self.influx.ensure_storage()
        objects = render_stack(request.spec, self.catalog, self.platform_namespace)
        applied += self.target.apply(request.client, objects)
        applied += self.broker.ensure_devices(request.client, request.devices)
        log.info("provisioned", extra={"client": request.client, "applied": len(applied)})
        return applied

    def cancel(self, client: str) -> list[str]:
        """Shut devices out first, then remove the workload and the client's series."""
        removed = self.broker.remove_client(client)
        removed += self.target.remove(client)
        removed += self.influx.drop_client(client)
        log.info("cancelled", extra={"client": client, "removed": len(removed)})
        return removed
