"""Device users on RabbitMQ through its management HTTP API.

One user per device, `<client>.<device>`, created from the salted SHA-256 hash the api issued
(never a plaintext password), with vhost permissions just wide enough for the MQTT plugin and
topic permissions on `amq.topic` confining publish and subscribe to `devices.<client>.<device>.`
(MQTT `devices/<client>/<device>/...`). Every call is a PUT or DELETE of a named resource, so
repeating it changes nothing.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Any

import httpx

from iotgw.contracts.credentials import HASHING_ALGORITHM, device_client_id, device_username
from iotgw.contracts.names import check_dns_label
from iotgw.contracts.payloads import DeviceCredential
from iotgw.contracts.topology import TOPIC_EXCHANGE
from iotgw.provisioner.errors import PermanentError, TransientError, is_transient_status


def mqtt_permissions(client: str, device: str) -> dict[str, str]:
    """configure/write/read regexes for the MQTT plugin's own resources of this device only.

    The plugin declares `mqtt-subscription-<client id>qos0|qos1`, binds it to `amq.topic` and
    publishes to `amq.topic`; the client id is pinned to `<client>/<device>`, so a device
    cannot use another device's session queue.
    """
    queue = re.escape(f"mqtt-subscription-{device_client_id(client, device)}") + "qos[01]"
    exchange = re.escape(TOPIC_EXCHANGE)
    return {
        "configure": f"^{queue}$",
        "write": f"^({exchange}|{queue})$",
        "read": f"^({exchange}|{queue})$",
    }


def topic_permissions(client: str, device: str) -> dict[str, str]:
    """Routing-key regexes on `amq.topic`: only `devices.<client>.<device>.` and below."""
    prefix = "^" + re.escape(f"devices.{client}.{device}.")
    return {"exchange": TOPIC_EXCHANGE, "write": prefix, "read": prefix}


class BrokerUsers:
    """Creates and removes device users on one vhost."""

    def __init__(
        self,
        management_url: str,
        vhost: str,
        user: str,
        password: str,
        timeout: float = 10.0,
    ) -> None:
        self.vhost = vhost
        self._http = httpx.Client(
            base_url=management_url.rstrip("/"), auth=(user, password), timeout=timeout
        )

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    def ensure_devices(self, client: str, devices: tuple[DeviceCredential, ...]) -> list[str]:
        """Create or update each device's user and permissions; return `User/<name>` of each."""
        vhost = _q(self.vhost)
        applied = []
        for device in devices:
            username = device_username(client, device.id)
            user = _q(username)
            self._call(
                "PUT",
                f"/api/users/{user}",
                {
                    "password_hash": device.password_hash,
                    "hashing_algorithm": HASHING_ALGORITHM,
                    "tags": "",
                },
            )
            self._call(
                "PUT", f"/api/permissions/{vhost}/{user}", mqtt_permissions(client, device.id)
            )
            self._call(
                "PUT",
                f"/api/topic-permissions/{vhost}/{user}",
                topic_permissions(client, device.id),
            )
            applied.append(f"User/{username}")
        return applied

    def client_users(self, client: str) -> list[str]:
        """Names of the device users of `client` (`<client>.<device>`; labels hold no dot)."""
        prefix = check_dns_label(client, "client") + "."
        response = self._call("GET", "/api/users", None)
        users: list[dict[str, Any]] = response.json()
        return sorted(
            u["name"] for u in users if u["name"].startswith(prefix) and u["name"].count(".") == 1
        )

    def remove_client(self, client: str) -> list[str]:
        """Delete every device user of `client` (their permissions go with them)."""
        removed = []
        for name in self.client_users(client):
            self._call("DELETE", f"/api/users/{_q(name)}", None, missing_ok=True)
            removed.append(f"User/{name}")
        return removed

    def _call(
        self, method: str, path: str, body: dict[str, Any] | None, *, missing_ok: bool = False
    ) -> httpx.Response:
        try:
            response = self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise TransientError(f"RabbitMQ management {method}: {type(exc).__name__}") from exc
        if response.is_success or (missing_ok and response.status_code == 404):
            return response
        # The path names users, never secrets; the body (with the hash) is not logged.
        reason = f"RabbitMQ management {method} {path}: HTTP {response.status_code}"
        if is_transient_status(response.status_code):
            raise TransientError(reason)
        raise PermanentError(f"{reason} {response.text[:200]}")


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")
