"""Who the simulated modules are, their passwords, and putting them on a broker.

Decision: every module has its own broker user `<client>.<device>` (as real modules do), with a
password derived from one fleet secret (HMAC-SHA256), so a fleet of 10,000 needs no credential
file: the simulator and whoever creates the users derive the same passwords. `provision` creates
the users in one management-API definitions import (one request for thousands of users, with
RabbitMQ password hashes, never plaintext), for the local stack, tests and benchmarks; in
production the provisioner owns broker users.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr, TypeAdapter

from iotgw.contracts.credentials import HASHING_ALGORITHM, device_username, rabbit_password_hash
from iotgw.contracts.names import DnsLabel
from iotgw.edge_agent.device import DeviceIdentity


def fleet(client: str, prefix: str, count: int) -> list[DeviceIdentity]:
    """`count` identities `<prefix>-00001`... under `client`."""
    width = max(5, len(str(count)))
    return [DeviceIdentity(client, f"{prefix}-{i:0{width}d}") for i in range(1, count + 1)]


class IssuedCredential(BaseModel):
    """One module and the secret its purchase issued (the api shows it once)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    client: DnsLabel
    device: DnsLabel
    secret: SecretStr


def load_credentials(path: Path) -> tuple[list[DeviceIdentity], dict[str, str]]:
    """Read a JSON list of `{client, device, secret}`: the identities and username -> secret.

    This is how purchased modules run in the simulator with the credentials the api issued
    (their broker users were created by the provisioner, confined to their own topics).
    """
    issued = TypeAdapter(list[IssuedCredential]).validate_python(json.loads(path.read_text()))
    identities = [DeviceIdentity(c.client, c.device) for c in issued]
    passwords = {
        i.username: c.secret.get_secret_value() for i, c in zip(identities, issued, strict=True)
    }
    return identities, passwords


def module_password(secret: str, identity: DeviceIdentity) -> str:
    """The password of one module, derived from the fleet secret."""
    mac = hmac.new(secret.encode(), identity.username.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:18]).decode()


def provision(
    management_url: str,
    admin: tuple[str, str],
    vhost: str,
    identities: list[DeviceIdentity],
    secret: str,
    timeout: float = 300,
) -> None:
    """Create (or update) the modules' users with full rights on `vhost`, in one request."""
    users = [
        {
            "name": device_username(i.client, i.device),
            "password_hash": rabbit_password_hash(module_password(secret, i)),
            "hashing_algorithm": HASHING_ALGORITHM,
            "tags": "",
        }
        for i in identities
    ]
    permissions = [
        {"user": u["name"], "vhost": vhost, "configure": ".*", "write": ".*", "read": ".*"}
        for u in users
    ]
    response = httpx.post(
        f"{management_url}/api/definitions",
        json={"users": users, "permissions": permissions},
        auth=admin,
        timeout=timeout,
    )
    response.raise_for_status()
