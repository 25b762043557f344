"""The outbox relay against the real broker: confirms, order, unroutable rows, two relays."""

from __future__ import annotations

import threading

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from iotgw.cloud_bridge.api.testing import drain
from iotgw.cloud_bridge.outbox.relay import OutboxRelay
from iotgw.cloud_bridge.registry import repository as repo
from iotgw.cloud_bridge.registry.models import OutboxMessage
from iotgw.contracts.topology import CONFIG_QUEUE
from iotgw.localstack.pytest_plugin import Broker


def _enqueue(sessions: sessionmaker[Session], keys: list[str]) -> list[str]:
    with sessions.begin() as s:
        rows = [
            repo.enqueue(s, key, f'{{"n": {n}}}'.encode(), trace_id=None)
            for n, key in enumerate(keys)
        ]
        s.flush()
        return [r.message_id for r in rows]


def test_relay_publishes_in_order_with_message_ids_and_marks_sent(
    sessions: sessionmaker[Session], topology_broker: Broker
) -> None:
    ids = _enqueue(sessions, [f"config.acme.d{n}.desired" for n in range(5)])
    relay = OutboxRelay(sessions, topology_broker.amqp_url)
    try:
        assert relay.publish_pending() == 5
        assert relay.publish_pending() == 0
    finally:
        relay.close()
    events = drain(topology_broker.channel(), CONFIG_QUEUE, idle=0.5)
    assert [props.message_id for _, props, _ in events] == ids
    with sessions() as s:
        assert repo.outbox_backlog(s) == 0


def test_unroutable_message_stays_unsent_and_does_not_block_the_others(
    sessions: sessionmaker[Session], topology_broker: Broker
) -> None:
    _enqueue(sessions, ["nobody.listens.here", "config.acme.d1.desired"])
    relay = OutboxRelay(sessions, topology_broker.amqp_url)
    try:
        assert relay.publish_pending() == 1
    finally:
        relay.close()
    with sessions() as s:
        stuck = s.scalars(select(OutboxMessage).where(OutboxMessage.sent_at.is_(None))).one()
    assert stuck.routing_key == "nobody.listens.here"
    assert stuck.last_error is not None
    assert "unroutable" in stuck.last_error
    assert len(drain(topology_broker.channel(), CONFIG_QUEUE, idle=0.5)) == 1


def test_two_relays_publish_each_row_exactly_once(
    sessions: sessionmaker[Session], topology_broker: Broker
) -> None:
    ids = _enqueue(sessions, [f"config.acme.d{n}.desired" for n in range(300)])
    relays = [OutboxRelay(sessions, topology_broker.amqp_url, poll_interval=0.05) for _ in range(2)]
    threads = [threading.Thread(target=r.run) for r in relays]
    for t in threads:
        t.start()
    try:
        events = []
        channel = topology_broker.channel()
        for method, props, _body in channel.consume(CONFIG_QUEUE, inactivity_timeout=3):
            if method is None:
                break
            events.append(props.message_id)
            channel.basic_ack(method.delivery_tag)
            if len(events) == len(ids):
                break
        channel.cancel()
    finally:
        for r in relays:
            r.stop()
        for t in threads:
            t.join(10)
    assert sorted(events) == sorted(ids)
    assert len(drain(topology_broker.channel(), CONFIG_QUEUE, idle=0.5)) == 0
