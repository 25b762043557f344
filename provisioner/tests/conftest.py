"""Fixtures for the provisioner's tests: kmock extended to server-side apply, purchases, settings.

kmock's KubernetesEmulator answers an apply PATCH on a missing object with 404; a real API
server creates it. `ApplyingEmulator` does what the real server does: an apply creates a missing
object, replaces an existing one with the applied configuration (one field manager owns every
field), keeps an unchanged object as it is (no new version), refuses objects in a namespace that
does not exist, and deleting a namespace deletes what is inside. `failures` injects statuses.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import kmock
import paho.mqtt.client as mqtt
import pytest
from kubernetes import client as k8s
from paho.mqtt.enums import CallbackAPIVersion

from iotgw.contracts.credentials import device_client_id, device_username, rabbit_password_hash
from iotgw.contracts.envelope import Envelope
from iotgw.contracts.payloads import DeviceCredential, PurchaseData
from iotgw.localstack.pytest_plugin import Broker, InfluxDatabase
from iotgw.provisioner.app import Provisioner
from iotgw.provisioner.kube import KubernetesTarget
from iotgw.provisioner.settings import ProvisionerSettings
from iotgw.provisioner.targets import Target

MQTT_TIMEOUT = 10
NAMESPACES = kmock.resource(group="", version="v1", plural="namespaces")
Key = tuple[Any, str | None, str]


def object_key(path: str) -> Key | None:
    """(resource, namespace, name) of an object URL; kmock reads /api/v1/namespaces/x as a scope."""
    parts = path.strip("/").split("/")
    if parts[0] == "api" and len(parts) >= 2:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[0] == "apis" and len(parts) >= 3:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    if len(rest) == 2:
        return kmock.resource(group=group, version=version, plural=rest[0]), None, rest[1]
    if len(rest) == 4 and rest[0] == "namespaces":
        return kmock.resource(group=group, version=version, plural=rest[2]), rest[1], rest[3]
    return None


@attrs.define(kw_only=True)
class ApplyingEmulator(kmock.KubernetesEmulator):
    """KubernetesEmulator that answers server-side apply like a real API server."""

    failures: list[int] = attrs.field(factory=list)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        key = object_key(request.url.path)
        content_type = request.headers.get("Content-Type", "")
        is_apply = content_type.startswith("application/apply-patch")
        if key is not None and request.method == kmock.method.PATCH and is_apply:
            return await self._apply(key, request.data)
        if key is not None and request.method == kmock.method.DELETE and key[0] == NAMESPACES:
            return self._delete_namespace(key)
        if key is not None and request.method == kmock.method.GET and key[0] == NAMESPACES:
            if not self._exists(key):
                raise kmock.KubernetesObjectNotFoundError()
            return aiohttp.web.json_response(self._objects[key].raw)
        return await super()._handle(request)

    async def _apply(self, key: Key, body: dict[str, Any]) -> aiohttp.web.StreamResponse:
        if self.failures:
            status = self.failures.pop(0)
            raise kmock.KubernetesError(status=status, reason="Injected", message="injected")
        namespace = key[1]
        if namespace is not None and not self._exists((NAMESPACES, None, namespace)):
            raise kmock.KubernetesNotFoundError(message=f'namespaces "{namespace}" not found')
        if key not in self._objects:
            self._objects[key] = body
        elif self._objects[key].deleted:
            self._objects[key].create(body)
        elif self._objects[key].raw != body:
            self._objects[key].history.append(body)
        return aiohttp.web.json_response(self._objects[key].raw)

    def _exists(self, key: Key) -> bool:
        return key in self._objects and not self._objects[key].deleted

    def _delete_namespace(self, key: Key) -> aiohttp.web.StreamResponse:
        if not self._exists(key):
            raise kmock.KubernetesObjectNotFoundError()
        raw = self._objects[key].raw
        for (_, ns, _), obj in list(self._objects.items()):
            if ns == key[2] and not obj.deleted:
                obj.delete()
        self._objects[key].delete()
        return aiohttp.web.json_response(raw)

    def add_namespace(self, name: str, labels: dict[str, str]) -> None:
        """A namespace somebody else made (not through the provisioner)."""
        body = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": labels},
        }
        self._objects[NAMESPACES, None, name] = body

    def live(self) -> dict[tuple[str, str | None, str], dict[str, Any]]:
        """Every object that exists: (plural, namespace, name) -> object."""
        return {
            (str(resource.plural), ns, name): obj.raw
            for (resource, ns, name), obj in self._objects.items()
            if not obj.deleted
        }

    def versions(self) -> dict[tuple[str, str | None, str], int]:
        """How many versions each object has had."""
        return {
            (str(r.plural), ns, name): len(o.history) for (r, ns, name), o in self._objects.items()
        }


@pytest.fixture
def kmock_options() -> dict[str, Any]:
    """Make kmock's own `kmock` fixture serve the ApplyingEmulator."""
    return {"cls": ApplyingEmulator}


@pytest.fixture
def kube_target(kmock: ApplyingEmulator) -> KubernetesTarget:
    """The kubernetes target talking to kmock over real HTTP."""
    configuration = k8s.Configuration()
    configuration.host = str(kmock.url).rstrip("/")
    return KubernetesTarget(k8s.ApiClient(configuration), timeout=5)


Purchase = Callable[..., Envelope]


@pytest.fixture
def secrets_of() -> dict[str, str]:
    """device id -> secret of the devices `purchase` made (the test plays the api)."""
    return {}


@pytest.fixture
def purchase(secrets_of: dict[str, str]) -> Purchase:
    """Build a `purchases.<client>.created` envelope with hashed device secrets."""

    def make(
        client: str = "acme",
        product: str = "Product-A",
        devices: tuple[str, ...] = ("dev-1",),
        hardware: str = "Classic",
        action: str = "created",
    ) -> Envelope:
        creds = []
        for device in devices:
            secret = f"s3cret-{uuid.uuid4().hex}"
            secrets_of[device] = secret
            creds.append(DeviceCredential(id=device, password_hash=rabbit_password_hash(secret)))
        data = PurchaseData(order_id=f"ord-{uuid.uuid4().hex[:8]}", quantity=max(1, len(creds)))
        data = data.model_copy(update={"devices": creds})
        return Envelope.new(
            client=client,
            product=product,
            hardware=hardware,  # type: ignore[arg-type]
            app="api",
            action=action,
            publisher="iotgw-api",
            data=data.model_dump(),
        )

    return make


@pytest.fixture
def settings_for(tmp_path: Path) -> Callable[[Broker, InfluxDatabase], ProvisionerSettings]:
    """Provisioner settings pointing at the test's vhost, database and a temporary folder."""

    def make(broker: Broker, db: InfluxDatabase, **overrides: Any) -> ProvisionerSettings:
        node = broker.node.endpoints
        values: dict[str, Any] = {
            "amqp_url": broker.amqp_url,
            "rabbitmq_management_url": node.management_url,
            "rabbitmq_management_user": node.username,
            "rabbitmq_management_password": node.password,
            "influx_url": db.url,
            "influx_database": db.name,
            "manifests_dir": tmp_path / "manifests",
            "provisioner_workers": 2,
            "metrics_port": 0,
        }
        return ProvisionerSettings(**(values | overrides))

    return make


@pytest.fixture
def running() -> Iterator[Callable[..., Provisioner]]:
    """Start a provisioner (its worker threads) for the test; stopped afterwards."""
    started: list[Provisioner] = []

    def start(settings: ProvisionerSettings, target: Target, **kwargs: Any) -> Provisioner:
        provisioner = Provisioner(settings, target, **kwargs)
        provisioner.start()
        started.append(provisioner)
        return provisioner

    yield start
    for provisioner in started:
        provisioner.close()


class Device:
    """A paho client logging in as a provisioned device, with events to await."""

    def __init__(self, broker: Broker, client: str, device: str, secret: str) -> None:
        self.mqtt = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=device_client_id(client, device),
            protocol=mqtt.MQTTv311,
        )
        self.mqtt.username_pw_set(broker.mqtt_username(device_username(client, device)), secret)
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.subscribed = threading.Event()
        # Set by a SUBACK or by the broker closing the connection, whichever comes first.
        self.answered = threading.Event()
        self.connect_rc: Any = None
        self.granted: list[Any] = []
        self.mqtt.on_connect = self._on_connect
        self.mqtt.on_disconnect = self._on_disconnect
        self.mqtt.on_subscribe = self._on_subscribe
        self.mqtt.connect(broker.mqtt_host, broker.mqtt_port)
        self.mqtt.loop_start()

    def _on_connect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        self.connect_rc = rc
        self.connected.set()
        if rc.is_failure:
            self.disconnected.set()

    def _on_disconnect(self, *_args: Any) -> None:
        self.disconnected.set()
        self.answered.set()

    def _on_subscribe(self, _c: Any, _u: Any, _mid: Any, codes: list[Any], _p: Any) -> None:
        self.granted = codes
        self.subscribed.set()
        self.answered.set()

    def ok(self) -> bool:
        assert self.connected.wait(MQTT_TIMEOUT) or self.disconnected.wait(MQTT_TIMEOUT)
        return self.connect_rc is not None and not self.connect_rc.is_failure

    def publish(self, topic: str) -> None:
        self.mqtt.publish(topic, b'{"ts": 1, "seq": 1, "metrics": {"t": 1.0}}', qos=1)

    def close(self) -> None:
        self.mqtt.disconnect()
        self.mqtt.loop_stop()


@pytest.fixture
def mqtt_device() -> Iterator[Callable[[Broker, str, str, str], Device]]:
    """Connect paho clients as provisioned devices; disconnected after the test."""
    opened: list[Device] = []

    def connect(broker: Broker, client: str, device: str, secret: str) -> Device:
        opened.append(Device(broker, client, device, secret))
        return opened[-1]

    yield connect
    for device in opened:
        device.close()
