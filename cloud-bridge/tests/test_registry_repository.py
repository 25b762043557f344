"""The registry's repository on SQLite and PostgreSQL: orders, devices, presence, outbox."""

from __future__ import annotations

import threading
import time

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from iotgw.cloud_bridge.registry import repository as repo
from iotgw.cloud_bridge.registry.models import ApiKey, Base, Order, OrderStatus, OutboxMessage
from iotgw.contracts.credentials import verify_password_hash
from iotgw.contracts.envelope import Envelope
from iotgw.contracts.payloads import DesiredConfig, PurchaseData

REQUEST = repo.OrderRequest("Product-A", "Development", "SaaS", "Dedicated", 2)


def _client(sessions: sessionmaker[Session], name: str = "acme") -> str:
    with sessions.begin() as s:
        repo.create_client(s, name)
    return name


def test_migrations_match_the_models(registry_engine: Engine) -> None:
    with registry_engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_api_keys_are_stored_hashed_and_resolve_to_their_client(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as s:
        _, key = repo.create_client(s, "acme")
    with sessions() as s:
        assert repo.client_for_api_key(s, key) == "acme"
        assert repo.client_for_api_key(s, key + "x") is None
        stored = s.scalars(select(ApiKey.key_hash)).all()
    assert key not in stored
    with sessions.begin() as s, pytest.raises(repo.ClientExistsError):
        repo.create_client(s, "acme")


def test_order_writes_devices_and_one_purchase_event(sessions: sessionmaker[Session]) -> None:
    client = _client(sessions)
    with sessions.begin() as s:
        placed = repo.place_order(s, client, REQUEST, "k1")
    assert placed.created
    assert len(placed.secrets) == 2
    with sessions() as s:
        devices = repo.order_devices(s, client, placed.order.id)
        (message,) = s.scalars(select(OutboxMessage)).all()
    for device in devices:
        assert verify_password_hash(placed.secrets[device.id], device.password_hash)
    assert message.routing_key == "purchases.acme.created"
    envelope = Envelope.from_json(message.body)
    assert str(envelope.trace_id) == placed.order.trace_id
    assert envelope.message_attributes.event_type.value == "mycompany.api.event.acme.created"
    data = PurchaseData.model_validate(envelope.data)
    assert {d.id: d.password_hash for d in data.devices} == {d.id: d.password_hash for d in devices}
    assert not any(secret in message.body.decode() for secret in placed.secrets.values())


def test_same_idempotency_key_returns_the_first_order(sessions: sessionmaker[Session]) -> None:
    client = _client(sessions)
    with sessions.begin() as s:
        first = repo.place_order(s, client, REQUEST, "k1")
    with sessions.begin() as s:
        again = repo.place_order(s, client, REQUEST, "k1")
    assert not again.created
    assert again.order.id == first.order.id
    assert again.secrets == {}
    with sessions.begin() as s, pytest.raises(repo.IdempotencyConflictError):
        repo.place_order(
            s, client, repo.OrderRequest("Product-B", "Stage", "SaaS", "Classic", 1), "k1"
        )
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Order)) == 1
        assert s.scalar(select(func.count()).select_from(OutboxMessage)) == 1


def test_concurrent_sessions_with_one_key_create_one_order(
    sessions: sessionmaker[Session],
) -> None:
    client = _client(sessions)
    start = threading.Barrier(4)
    ids: list[str] = []

    def buy() -> None:
        start.wait()
        with sessions.begin() as s:
            ids.append(repo.place_order(s, client, REQUEST, "same").order.id)

    threads = [threading.Thread(target=buy) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(ids) == 4
    assert len(set(ids)) == 1
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(OutboxMessage)) == 1


def test_orders_and_devices_are_scoped_to_their_client(sessions: sessionmaker[Session]) -> None:
    _client(sessions, "alpha")
    _client(sessions, "beta")
    with sessions.begin() as s:
        placed = repo.place_order(s, "alpha", REQUEST)
    device_id = next(iter(placed.secrets))
    with sessions() as s:
        assert repo.get_order(s, "beta", placed.order.id) is None
        assert repo.get_device(s, "beta", device_id) is None
        assert repo.list_devices(s, "beta") == []
        assert repo.get_order(s, "alpha", placed.order.id) is not None
    with sessions.begin() as s, pytest.raises(repo.DeviceNotFoundError):
        repo.rotate_credentials(s, "beta", device_id)


def test_status_flow_pending_provisioning_ready(sessions: sessionmaker[Session]) -> None:
    client = _client(sessions)
    with sessions.begin() as s:
        order_id = repo.place_order(s, client, REQUEST).order.id
    with sessions.begin() as s:
        (message,) = repo.claim_unsent(s)
        repo.mark_sent(s, message)
    with sessions() as s:
        assert repo.get_order(s, client, order_id).status == OrderStatus.PROVISIONING  # type: ignore[union-attr]
        assert repo.outbox_backlog(s) == 0
    with sessions.begin() as s:
        repo.apply_provisioning_outcome(s, client, order_id, ready=False, reason="quota")
    with sessions() as s:
        order = repo.get_order(s, client, order_id)
        assert order is not None
        assert (order.status, order.reason) == ("Failed", "quota")
    with sessions.begin() as s:
        repo.apply_provisioning_outcome(s, client, order_id, ready=True)
        repo.apply_provisioning_outcome(s, client, order_id, ready=False, reason="late")
    with sessions() as s:
        order = repo.get_order(s, client, order_id)
        assert order is not None
        assert order.status == "Ready"
        assert order.ready_at is not None
        overview = repo.client_overview(s)
    assert overview[0].deployed_at == order.ready_at
    assert overview[0].products == ["Product-A"]
    assert overview[0].hardware == ["Dedicated"]


def test_stale_offline_from_an_older_epoch_never_overrides_a_newer_online(
    sessions: sessionmaker[Session],
) -> None:
    client = _client(sessions)
    with sessions.begin() as s:
        device = next(iter(repo.place_order(s, client, REQUEST).secrets))
    now = time.time()
    with sessions.begin() as s:
        assert repo.record_status(s, client, device, True, 2, now)
        assert not repo.record_status(s, client, device, False, 1, now + 1)
        assert not repo.record_status(s, client, "nope", True, 1, now)
    with sessions() as s:
        row = repo.get_device(s, client, device)
        assert row is not None
        assert (row.online, row.epoch) == (True, 2)
    with sessions.begin() as s:
        assert repo.record_status(s, client, device, False, 2, now + 2)
        # A redelivered online of the epoch that already ended stays ignored.
        assert not repo.record_status(s, client, device, True, 2, now + 3)
        assert repo.record_status(s, client, device, True, 3, now + 4)
    with sessions() as s:
        row = repo.get_device(s, client, device)
        assert row is not None
        assert (row.online, row.epoch) == (True, 3)
        assert row.last_seen is not None
        assert abs(row.last_seen.timestamp() - (now + 4)) < 0.01


def test_desired_config_versions_and_reported_state(sessions: sessionmaker[Session]) -> None:
    client = _client(sessions)
    with sessions.begin() as s:
        device = next(iter(repo.place_order(s, client, REQUEST).secrets))
    with sessions.begin() as s:
        config = repo.set_desired_config(s, client, device, 0, {"sampling_interval_s": 5})
    assert config.version == 1
    with sessions.begin() as s, pytest.raises(repo.VersionMismatchError) as stale:
        repo.set_desired_config(s, client, device, 0, {"sampling_interval_s": 7})
    assert stale.value.current == 1
    with sessions() as s:
        assert repo.desired_config(s, client, device) == DesiredConfig(
            version=1, sampling_interval_s=5
        )
        keys = s.scalars(select(OutboxMessage.routing_key).order_by(OutboxMessage.id)).all()
        row = repo.get_device(s, client, device)
        assert row is not None
        assert not row.in_sync
    assert keys == ["purchases.acme.created", f"config.acme.{device}.desired"]
    now = time.time()
    with sessions.begin() as s:
        assert repo.record_state(s, client, device, 1, now)
        assert not repo.record_state(s, client, device, 0, now - 10)
    with sessions() as s:
        row = repo.get_device(s, client, device)
        assert row is not None
        assert row.in_sync
    with sessions.begin() as s:
        repo.set_desired_config(s, client, device, 1, {"sampling_interval_s": 1})
        repo.record_state(s, client, device, 1, now + 1, rejected_version=2, reason="too fast")
    with sessions() as s:
        row = repo.get_device(s, client, device)
        assert row is not None
        assert (row.in_sync, row.rejected_version, row.rejected_reason) == (False, 2, "too fast")
