"""Device identities on the broker: usernames, client ids and RabbitMQ-compatible password hashes.

Decision: one RabbitMQ user per device, created by the provisioner with topic permissions that
confine it to `devices/<client>/<device>/`. The api issues the secret (shown once) and stores
only this hash; the hash, not the secret, travels in the purchase event, and the provisioner
hands it to RabbitMQ as `password_hash`. No plaintext secret crosses the bus or reaches a log.
An HTTP auth backend backed by the registry would make every device connect depend on the api
being up; per-device users keep the broker self-sufficient.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from iotgw.contracts.names import check_dns_label

SALT_BYTES = 4  # RabbitMQ's rabbit_password_hashing_sha256 uses a 32-bit salt
HASHING_ALGORITHM = "rabbit_password_hashing_sha256"


def device_username(client: str, device: str) -> str:
    """The broker username of a device: `<client>.<device>` (both DNS labels, so unambiguous)."""
    return f"{check_dns_label(client, 'client')}.{check_dns_label(device, 'device')}"


def device_client_id(client: str, device: str) -> str:
    """The MQTT client id of a device; unique per broker, stable across restarts."""
    return f"{check_dns_label(client, 'client')}/{check_dns_label(device, 'device')}"


def new_secret() -> str:
    """A fresh device secret (shown to the customer once)."""
    return secrets.token_urlsafe(24)


def rabbit_password_hash(secret: str, salt: bytes | None = None) -> str:
    """Hash `secret` the way RabbitMQ stores it: base64(salt + sha256(salt + secret))."""
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    digest = hashlib.sha256(salt + secret.encode()).digest()
    return base64.b64encode(salt + digest).decode()


def verify_password_hash(secret: str, stored: str) -> bool:
    """True when `secret` matches a hash made by `rabbit_password_hash`."""
    raw = base64.b64decode(stored)
    expected = rabbit_password_hash(secret, raw[:SALT_BYTES])
    return hmac.compare_digest(expected, stored)
