"""Device identities and RabbitMQ-compatible password hashes."""

from __future__ import annotations

import pytest

from iotgw.contracts.credentials import (
    device_client_id,
    device_username,
    new_secret,
    rabbit_password_hash,
    verify_password_hash,
)


def test_hash_verifies_only_its_secret() -> None:
    secret = new_secret()
    stored = rabbit_password_hash(secret)
    assert verify_password_hash(secret, stored)
    assert not verify_password_hash(secret + "x", stored)
    assert rabbit_password_hash(secret) != stored  # salted


def test_names_refuse_anything_but_dns_labels() -> None:
    assert device_username("acme", "dev-1") == "acme.dev-1"
    assert device_client_id("acme", "dev-1") == "acme/dev-1"
    with pytest.raises(ValueError, match="device"):
        device_username("acme", "dev:1")
