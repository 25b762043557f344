"""The simulator against the real RabbitMQ MQTT plugin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from iotgw.contracts.payloads import Telemetry
from iotgw.contracts.topology import STATUS_QUEUE, TELEMETRY_QUEUE
from iotgw.localstack.pytest_plugin import Broker

SECRET = "test-fleet-secret"


@pytest.fixture
def run_sim(topology_broker: Broker) -> Callable[..., dict[str, Any]]:
    """`run_sim(*flags)`: provision and run the simulator with --json; returns its totals."""

    def run(*flags: str, timeout: float = 240) -> dict[str, Any]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IOTGW_")}
        env.update(
            IOTGW_MQTT_HOST=topology_broker.mqtt_host,
            IOTGW_MQTT_PORT=str(topology_broker.mqtt_port),
            IOTGW_RABBITMQ_MANAGEMENT_URL=topology_broker.node.endpoints.management_url,
            IOTGW_SIM_SECRET=SECRET,
            IOTGW_LOG_LEVEL="WARNING",
        )
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "iotgw.device_sim",
                "--json",
                "--provision",
                "--vhost",
                topology_broker.vhost,
                *flags,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        totals: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
        return totals

    return run


@pytest.fixture
def queue_count(topology_broker: Broker) -> Callable[[str], int]:
    """Messages ready in a queue of the test's vhost (exact, from a passive declare)."""
    channel = topology_broker.channel()

    def count(queue: str) -> int:
        return int(channel.queue_declare(queue, passive=True).method.message_count)

    return count


RunSim = Callable[..., dict[str, Any]]


def _assert_queue_matches_acks(totals: dict[str, Any], modules: int, queued: int) -> None:
    assert totals["drained"] is True
    assert totals["max_connected"] == modules
    assert totals["buffered"] == 0
    assert totals["acked"] > 0
    assert totals["acked"] == totals["sampled"]
    assert queued == totals["acked"]


def test_fleet_count_on_queue_equals_acknowledged(
    run_sim: RunSim, queue_count: Callable[[str], int]
) -> None:
    totals = run_sim("--count", "150", "--rate", "2", "--duration", "5")
    _assert_queue_matches_acks(totals, 150, queue_count(TELEMETRY_QUEUE))
    # Every module announced itself online, and went offline on a clean stop.
    assert queue_count(STATUS_QUEUE) == 2 * 150


@pytest.mark.slow
def test_thousand_modules_for_thirty_seconds(
    run_sim: RunSim, queue_count: Callable[[str], int]
) -> None:
    totals = run_sim("--count", "1000", "--rate", "1", "--duration", "30", timeout=600)
    _assert_queue_matches_acks(totals, 1000, queue_count(TELEMETRY_QUEUE))


def test_faults_lose_nothing(topology_broker: Broker, run_sim: RunSim) -> None:
    totals = run_sim(
        "--count", "40", "--rate", "5", "--duration", "8",
        "--storm-every-s", "2", "--storm-fraction", "0.3",
        "--outage-at-s", "3", "--outage-for-s", "1.5",
        "--duplicate-rate", "0.05", "--malformed-rate", "0.02",
        "--clock-skew-s", "30", "--slow-fraction", "0.2", "--slow-pause-s", "0.5",
    )  # fmt: skip
    assert totals["drained"] is True
    assert totals["storms"] >= 2
    assert totals["outages"] == 1
    assert totals["disconnects"] > 40  # storms and the outage cut connections
    assert totals["extra_sent"] > 0
    channel = topology_broker.channel()
    seqs: dict[str, set[int]] = defaultdict(set)
    malformed = 0
    while True:
        method, _props, body = channel.basic_get(TELEMETRY_QUEUE, auto_ack=True)
        if method is None:
            break
        try:
            seqs[method.routing_key].add(Telemetry.model_validate_json(body).seq)
        except ValidationError:
            malformed += 1
    assert malformed > 0
    assert len(seqs) == 40
    # Per module, every seq from 0 up arrived (duplicates and resends collapse in the set).
    assert sum(len(s) for s in seqs.values()) == totals["sampled"]
    for key, got in seqs.items():
        assert got == set(range(max(got) + 1)), key
