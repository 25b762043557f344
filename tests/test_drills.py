"""Fault drills against the real local stack: break one thing, assert nothing acknowledged is lost
and the platform recovers by itself, and record how long recovery took.

The default run holds each fault for a few seconds; `--slow` runs the long versions. With
IOTGW_DRILLS_RESULTS=path each drill adds its row to that JSON file, and
`python -m iotgw.localstack.drills render path docs/fault-drills.md` writes the table.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from iotgw.localstack.drills import (
    AgentIdentity,
    Coordinates,
    DrillResult,
    NetnsLink,
    OrderBook,
    OrderStream,
    Platform,
    TelemetryDrill,
    add_device_user,
    create_client,
    delete_device_user,
    poll,
    queue_stats,
    read_ledger,
    record,
    registry_devices,
    running,
)
from iotgw.localstack.influxdb import InfluxNode
from iotgw.localstack.postgres import PostgresNode
from iotgw.localstack.processes import StackError, free_ports
from iotgw.localstack.pytest_plugin import Broker, InfluxDatabase
from iotgw.localstack.rabbitmq import RabbitEndpoints, RabbitNode

SHORT_OUTAGE_S = 2.0
LONG_OUTAGE_S = 90.0
SIM_MODULES = 20
SIM_RATE_HZ = 5.0
CLIENT = "drill"


@pytest.fixture
def where(topology_broker: Broker, influx_db: InfluxDatabase, tmp_path: Path) -> Coordinates:
    """The drill's vhost, InfluxDB database, SQLite registry and api port."""
    (api_port,) = free_ports(1)
    return Coordinates(
        rabbit=topology_broker.node,
        vhost=topology_broker.vhost,
        influx=influx_db.node,
        influx_database=influx_db.name,
        database_url=f"sqlite:///{tmp_path / 'registry.db'}",
        work_dir=tmp_path,
        api_port=api_port,
    )


@pytest.fixture
def telemetry(where: Coordinates) -> Iterator[TelemetryDrill]:
    """Ingest and the simulator running, readings flowing into InfluxDB."""
    with running(where) as platform:
        platform.start("ingest")
        platform.wait_ready("ingest")
        state = where.work_dir / "sim"
        platform.start_sim(state, CLIENT, SIM_MODULES, SIM_RATE_HZ)
        drill = TelemetryDrill(platform, state / "fleet.db", CLIENT)
        drill.wait_flowing(SIM_MODULES * 5)
        yield drill


def _telemetry_drill(
    drill: TelemetryDrill,
    scenario: str,
    fault: Callable[[], None],
    lift: Callable[[], None],
    outage_s: float,
    note: str = "",
) -> DrillResult:
    """Break, hold for `outage_s`, lift, measure recovery, stop the modules, count."""
    platform = drill.platform
    fault()
    time.sleep(outage_s)  # the outage itself: its length is the point of the drill
    lift()
    lifted = time.time()
    recovery_s = drill.recovery(lifted)
    assert platform.stop("sim") == 0, platform.log_tail("sim")
    totals, stored, lost = drill.settle()
    result = DrillResult(
        scenario=scenario,
        unit="readings",
        sent=totals.issued,
        acknowledged=totals.acknowledged,
        stored=stored,
        lost=lost,
        recovery_s=round(recovery_s, 1),
        outage_s=outage_s,
        note=note,
    )
    record(result)
    assert totals.buffered == 0, "the modules did not deliver their buffers"
    assert totals.dropped == 0
    assert lost == 0, f"{lost} acknowledged readings are not in InfluxDB"
    assert stored == totals.acknowledged
    assert drill.points() == stored, "a seq was stored twice with different times"
    return result


def _kill(platform: Platform, name: str) -> Callable[[], None]:
    return lambda: platform.sup.kill(name)


def _restart(platform: Platform, name: str) -> Callable[[], None]:
    def restart() -> None:
        platform.sup.restart(name)

    return restart


@pytest.mark.parametrize("name", ["ingest", "sim"])
def test_kill_9_telemetry_process(telemetry: TelemetryDrill, name: str) -> None:
    """kill -9 of ingest or the simulator mid-stream: restarted, nothing acknowledged lost."""
    p = telemetry.platform
    _telemetry_drill(
        telemetry,
        f"kill -9 {'simulator' if name == 'sim' else name}",
        _kill(p, name),
        _restart(p, name),
        SHORT_OUTAGE_S,
    )


def _rabbit_restart(telemetry: TelemetryDrill, outage_s: float, scenario: str) -> None:
    rabbit = telemetry.platform.where.rabbit
    _telemetry_drill(
        telemetry,
        scenario,
        rabbit.stop_app,
        rabbit.start_app,
        outage_s,
        note="stop_app/start_app: every connection drops",
    )


def test_rabbitmq_restart(telemetry: TelemetryDrill) -> None:
    """The broker stops and starts again: modules and ingest reconnect by themselves."""
    _rabbit_restart(telemetry, SHORT_OUTAGE_S, "RabbitMQ restarted")


@pytest.mark.slow
def test_rabbitmq_restart_long(telemetry: TelemetryDrill) -> None:
    """The broker away for minutes."""
    _rabbit_restart(telemetry, LONG_OUTAGE_S, "RabbitMQ restarted (long)")


def _influx_restart(telemetry: TelemetryDrill, outage_s: float, scenario: str) -> None:
    influx: InfluxNode = telemetry.platform.where.influx
    _telemetry_drill(
        telemetry,
        scenario,
        influx.stop,
        influx.start,
        outage_s,
        note="ingest retries, the backlog waits in q.telemetry",
    )


def test_influxdb_restart(telemetry: TelemetryDrill) -> None:
    """InfluxDB stops and starts: ingest holds the backlog unacked and writes it afterwards."""
    _influx_restart(telemetry, SHORT_OUTAGE_S, "InfluxDB restarted")


@pytest.mark.slow
def test_influxdb_restart_long(telemetry: TelemetryDrill) -> None:
    """InfluxDB away for minutes."""
    _influx_restart(telemetry, LONG_OUTAGE_S, "InfluxDB restarted (long)")


def test_kill_9_order_processes(where: Coordinates) -> None:
    """kill -9 of the api, then of the provisioner, while orders stream in: every accepted
    order still reaches Ready, and the customer's retries (same Idempotency-Key) never double
    one. One platform for both (each phase has its own orders and its own row)."""
    with running(where) as platform:
        platform.start("api", "provisioner")
        platform.wait_ready("api", "provisioner")
        key = create_client(where.api, where.operator_key, CLIENT)
        placed = 0
        for name in ("api", "provisioner"):
            book = OrderBook(where.api, key)
            stream = OrderStream(book)
            stream.start()
            poll(lambda: book.ready() >= 3, 60, "orders flowing")  # noqa: B023 - used at once
            platform.sup.kill(name)
            time.sleep(SHORT_OUTAGE_S)  # the outage itself
            platform.sup.restart(name)
            lifted = time.time()
            recovery_s = stream.recovery(lifted)
            stream.stop()
            poll(book.all_ready, 60, "every accepted order Ready")
            ready = book.ready()
            placed += len(book.accepted)
            result = DrillResult(
                scenario=f"kill -9 {name}",
                unit="orders",
                sent=book.attempted,
                acknowledged=len(book.accepted),
                stored=ready,
                lost=len(book.accepted) - ready,
                recovery_s=round(recovery_s, 1),
                outage_s=SHORT_OUTAGE_S,
                note="acknowledged = accepted by the api, stored = Ready",
            )
            record(result)
            assert result.lost == 0
            assert book.attempted == len(book.accepted), "an intended order was never accepted"
            assert len(_orders(where.api, key)) == placed, "an order was doubled"


def _orders(api: str, key: str) -> list[dict[str, object]]:
    response = httpx.get(api + "/v1/orders", headers={"Authorization": f"Bearer {key}"})
    response.raise_for_status()
    orders: list[dict[str, object]] = response.json()
    return orders


AGENT_SETTINGS = {
    "IOTGW_SENSORS": '["counter"]',
    "IOTGW_SAMPLING_INTERVAL_S": "0.05",
    "IOTGW_BACKOFF_MIN_S": "0.2",
    "IOTGW_BACKOFF_MAX_S": "1",
    "IOTGW_MQTT_KEEPALIVE_S": "5",
    "IOTGW_MQTT_TCP_CONNECT_TIMEOUT_S": "0.5",
    "IOTGW_BUFFER_SYNC": "normal",
}
SAMPLES_PER_S = 20  # IOTGW_SAMPLING_INTERVAL_S above


def test_agent_buffer_full(where: Coordinates) -> None:
    """The agent cut off (its broker user gone) until its bounded buffer overflows: the oldest
    readings are dropped, counted and reported in the next readings; nothing else is lost."""
    agent = AgentIdentity(CLIENT, "agent-full")
    capacity = 40
    with running(where) as platform:
        platform.start("ingest")
        platform.wait_ready("ingest")
        add_device_user(where.rabbit, where.vhost, agent)
        state = where.work_dir / "agent"
        platform.start_agent(
            "agent", agent, state, {**AGENT_SETTINGS, "IOTGW_BUFFER_MAX_READINGS": str(capacity)}
        )
        drill = TelemetryDrill(platform, state / "agent.db", CLIENT)
        drill.wait_flowing(20)
        delete_device_user(where.rabbit, agent)
        # 20 readings/s against a 40-reading buffer: it overflows after ~2 s offline.
        outage_s = SHORT_OUTAGE_S + 3
        time.sleep(outage_s)  # the outage itself
        add_device_user(where.rabbit, where.vhost, agent)
        lifted = time.time()
        recovery_s = drill.recovery(lifted)
        assert platform.stop("agent") == 0, platform.log_tail("agent")
        totals, stored, lost = drill.settle()
        reported = where.influx.scalar(
            f"SELECT last(buffer_dropped) FROM telemetry WHERE device = '{agent.device}'",  # noqa: S608
            db=where.influx_database,
        )
    result = DrillResult(
        scenario="agent buffer full",
        unit="readings",
        sent=totals.issued,
        acknowledged=totals.acknowledged,
        stored=stored,
        lost=lost,
        recovery_s=round(recovery_s, 1),
        outage_s=outage_s,
        note=f"buffer {capacity}: {totals.dropped} oldest dropped, counted and reported",
    )
    record(result)
    assert totals.dropped > 0, "the buffer never overflowed: the drill did not drill"
    assert reported == totals.dropped, "the drops are not reported in the readings"
    assert lost == 0
    # A dropped reading may have reached the broker before its PUBACK was lost: stored >= acked.
    assert totals.acknowledged <= stored <= totals.issued


@pytest.fixture
def netns_link() -> Iterator[NetnsLink]:
    """A namespace with its own address for one module; skipped without root or `ip netns`."""
    if os.geteuid() != 0:
        pytest.skip("the network-namespace drill needs root (ip netns, veth)")
    if shutil.which("ip") is None:
        pytest.skip("the network-namespace drill needs iproute2's `ip`")
    link = NetnsLink(os.getpid() % 250 + 1)
    link.delete()  # a leftover of an interrupted run with the same number
    try:
        link.create()
    except StackError as exc:
        link.delete()
        pytest.skip(f"ip netns is unavailable here: {exc}")
    try:
        yield link
    finally:
        link.delete()


@pytest.fixture
def netns_rabbit(netns_link: NetnsLink, services_dir: Path) -> Iterator[RabbitNode]:
    """A node of our own whose MQTT listener also binds the host side of the veth pair (the
    session node was started before the pair existed)."""
    amqp, mqtt, mgmt, dist, epmd = free_ports(5)
    node = RabbitNode(
        services_dir / f"rabbitmq-netns-{amqp}",
        RabbitEndpoints(
            amqp_port=amqp,
            mqtt_port=mqtt,
            management_port=mgmt,
            dist_port=dist,
            epmd_port=epmd,
            node_name=f"iotgw-drill-{amqp}@localhost",
            mqtt_extra_hosts=(netns_link.host_addr,),
        ),
    )
    try:
        node.start()
        yield node
    finally:
        node.stop()


def _network_cut(
    netns_link: NetnsLink,
    netns_rabbit: RabbitNode,
    influx_db: InfluxDatabase,
    tmp_path: Path,
    outage_s: float,
    scenario: str,
) -> None:
    where = Coordinates(
        rabbit=netns_rabbit,
        vhost="/",
        influx=influx_db.node,
        influx_database=influx_db.name,
        database_url=f"sqlite:///{tmp_path / 'registry.db'}",
        work_dir=tmp_path,
        api_port=free_ports(1)[0],
    )
    agent = AgentIdentity(CLIENT, "agent-netns")
    with running(where) as platform:
        platform.start("ingest")
        platform.wait_ready("ingest")
        add_device_user(netns_rabbit, "/", agent)
        state = tmp_path / "agent"
        platform.start_agent(
            "agent",
            agent,
            state,
            {
                **AGENT_SETTINGS,
                "IOTGW_MQTT_HOST": netns_link.host_addr,
                "IOTGW_MQTT_PORT": str(netns_rabbit.endpoints.mqtt_port),
            },
            prefix=netns_link.exec_prefix,
        )
        drill = TelemetryDrill(platform, state / "agent.db", CLIENT)
        drill.wait_flowing(20)
        device = f"{CLIENT}/{agent.device}"
        before = drill.ledger()[device]
        epoch_before = before.epoch
        netns_link.set_up(False)
        time.sleep(outage_s)  # the cut itself, longer than the keepalive (5 s)
        during = drill.ledger()[device]
        cut_seen = during.buffered
        sampled_during_cut = during.issued - before.issued
        netns_link.set_up(True)
        lifted = time.time()
        recovery_s = drill.recovery(lifted)
        # Every connection attempt takes a new epoch: the agent saw the dead link by itself.
        reconnected = drill.ledger()[device].epoch > epoch_before
        assert platform.stop("agent") == 0, platform.log_tail("agent")
        totals, stored, lost = drill.settle()
    result = DrillResult(
        scenario=scenario,
        unit="readings",
        sent=totals.issued,
        acknowledged=totals.acknowledged,
        stored=stored,
        lost=lost,
        recovery_s=round(recovery_s, 1),
        outage_s=outage_s,
        note=f"veth link down in a netns, keepalive 5 s; {cut_seen} buffered at the end of the cut",
    )
    record(result)
    assert cut_seen > 0, "the agent kept delivering while cut off: the cut did not cut"
    # Reconnect attempts into a dead link must not stall sampling: a blocking TCP connect once
    # held the agent's loop 10 s per attempt and it took under a tenth of its readings.
    assert sampled_during_cut >= 0.25 * SAMPLES_PER_S * outage_s, sampled_during_cut
    assert reconnected, "the agent never noticed the cut (no new connection)"
    assert totals.dropped == 0
    assert lost == 0
    # The agent stops without draining: a reading still buffered may already be stored.
    assert totals.acknowledged <= stored <= totals.acknowledged + totals.buffered


def test_agent_network_cut(
    netns_link: NetnsLink, netns_rabbit: RabbitNode, influx_db: InfluxDatabase, tmp_path: Path
) -> None:
    """An agent in its own network namespace loses its link (no RST) for longer than the
    keepalive, then gets it back: it reconnects and replays its buffer; nothing is lost."""
    _network_cut(netns_link, netns_rabbit, influx_db, tmp_path, 12.0, "agent network cut")


@pytest.mark.slow
def test_agent_network_cut_minutes(
    netns_link: NetnsLink, netns_rabbit: RabbitNode, influx_db: InfluxDatabase, tmp_path: Path
) -> None:
    """The same cut for minutes."""
    _network_cut(
        netns_link, netns_rabbit, influx_db, tmp_path, 150.0, "agent network cut (minutes)"
    )


def _registry_outage(
    where: Coordinates, postgres: PostgresNode, outage_s: float, flaps: int, scenario: str
) -> None:
    """Modules come and go while the registry database is down; afterwards the registry shows
    every module's latest connection (epoch, online) and every status event was consumed."""
    with running(where) as platform:
        platform.start("api", "provisioner", "presence")
        platform.wait_ready("api", "provisioner", "presence")
        book = OrderBook(where.api, create_client(where.api, where.operator_key, CLIENT))
        order = book.created[book.place(quantity=3)]
        poll(book.all_ready, 60, "the order Ready")
        agents = [AgentIdentity(CLIENT, d["id"], d["secret"]) for d in order["devices"]]
        settings = {**AGENT_SETTINGS, "IOTGW_SAMPLING_INTERVAL_S": "1"}
        for agent in agents:
            platform.start_agent(agent.device, agent, where.work_dir / agent.device, settings)

        def ledger_epochs() -> dict[str, int]:
            epochs = {}
            for a in agents:
                ledger = read_ledger(where.work_dir / a.device / "agent.db")
                mine = ledger.get(f"{a.client}/{a.device}")
                # Not started yet: an epoch no registry holds.
                epochs[a.device] = mine.epoch if mine else -2
            return epochs

        def registry_matches() -> bool:
            seen = registry_devices(where.api, book.key)
            epochs = ledger_epochs()
            return all(
                d in seen and seen[d]["online"] and seen[d]["epoch"] == e for d, e in epochs.items()
            )

        poll(registry_matches, 60, "every module online in the registry")
        # An order accepted just before the outage: its provisioning statuses reach the api's
        # `q.api.status` consumer while it cannot write them.
        during = book.place()
        postgres.stop()
        # While the database is away each module crashes and comes back: a Last Will `offline`
        # and a new `online` per flap, all of which presence must keep until it can commit them.
        for _ in range(flaps):
            for agent in agents:
                platform.sup.kill(agent.device)
                platform.sup.restart(agent.device)
            time.sleep(outage_s / flaps)  # the outage itself
        postgres.start()
        lifted = time.monotonic()
        poll(
            lambda: registry_matches() and book.status(during) == "Ready",
            120,
            "the registry caught up",
        )
        recovery_s = time.monotonic() - lifted

        # At least: an `online` per start, a Last Will `offline` and an `online` per flap.
        expected = len(agents) * (1 + 2 * flaps)

        def consumed() -> bool:
            st = queue_stats(where.rabbit, where.vhost, "q.status")
            settled = st["messages"] == 0 and st["ack"] + st["dead"] >= st["publish"]
            return st["publish"] >= expected and settled

        # Queue counters come from the management stats, refreshed every few seconds.
        try:
            poll(consumed, 60, "q.status consumed")
        finally:
            stats = queue_stats(where.rabbit, where.vhost, "q.status")
            print(f"q.status counters: {stats}, expected publish >= {expected}")
    result = DrillResult(
        scenario=scenario,
        unit="status events",
        sent=stats["publish"],
        acknowledged=stats["publish"],
        stored=stats["ack"],
        lost=max(0, stats["publish"] - stats["ack"]),
        recovery_s=round(recovery_s, 1),
        outage_s=outage_s,
        note=f"PostgreSQL stopped; {len(agents)} modules crashed and reconnected {flaps}x "
        "meanwhile; an order provisioned meanwhile also reached Ready",
    )
    record(result)
    assert stats["dead"] == 0, "status events were dead-lettered"
    assert result.lost == 0


@pytest.fixture
def pg_where(where: Coordinates, postgres: PostgresNode) -> Iterator[Coordinates]:
    """The drill's coordinates with the registry on the session's PostgreSQL."""
    name = f"drill_{uuid.uuid4().hex[:10]}"
    postgres.create_database(name)
    yield dataclasses.replace(where, database_url=postgres.url(name))
    if postgres.pid() is None:
        postgres.start()
    postgres.drop_database(name)


def test_registry_database_outage(pg_where: Coordinates, postgres: PostgresNode) -> None:
    """PostgreSQL stopped while modules reconnect: presence retries, loses no status event."""
    _registry_outage(pg_where, postgres, SHORT_OUTAGE_S + 2, 1, "registry database down")


@pytest.mark.slow
def test_registry_database_outage_long(pg_where: Coordinates, postgres: PostgresNode) -> None:
    """PostgreSQL away for minutes while modules flap repeatedly."""
    _registry_outage(pg_where, postgres, LONG_OUTAGE_S, 5, "registry database down (long)")
