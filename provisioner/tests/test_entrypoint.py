"""`iotgw-provisioner` as a process: settings from IOTGW_* variables, JSON logs, clean SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

from iotgw.contracts.envelope import Envelope
from iotgw.contracts.topology import TOPIC_EXCHANGE
from iotgw.localstack.processes import free_ports
from iotgw.localstack.pytest_plugin import Broker, InfluxDatabase
from iotgw.provisioner.brokerusers import BrokerUsers

ENTRY = Path(sys.executable).with_name("iotgw-provisioner")


def test_the_entry_point_provisions_and_stops_on_sigterm(
    topology_broker: Broker,
    influx_db: InfluxDatabase,
    purchase: Callable[..., Envelope],
    tmp_path: Path,
) -> None:
    ep = topology_broker.node.endpoints
    (metrics_port,) = free_ports(1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOTGW_")} | {
        "IOTGW_AMQP_URL": topology_broker.amqp_url,
        "IOTGW_RABBITMQ_MANAGEMENT_URL": ep.management_url,
        "IOTGW_INFLUX_URL": influx_db.url,
        "IOTGW_INFLUX_DATABASE": influx_db.name,
        "IOTGW_PROVISIONER_TARGET": "manifests",
        "IOTGW_MANIFESTS_DIR": str(tmp_path / "gitops"),
        "IOTGW_PROVISIONER_WORKERS": "1",
        "IOTGW_METRICS_PORT": str(metrics_port),
    }
    channel = topology_broker.channel()
    status_queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(status_queue, TOPIC_EXCHANGE, "provisioning.#")
    proc = subprocess.Popen(
        [str(ENTRY)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        sent = purchase(client="proc-test")
        channel.basic_publish(TOPIC_EXCHANGE, "purchases.proc-test.created", sent.to_json())
        for method, _props, body in channel.consume(status_queue, inactivity_timeout=30):
            assert method is not None, "no status from the process"
            channel.basic_ack(method.delivery_tag)
            assert method.routing_key == "provisioning.proc-test.ready"
            assert Envelope.from_json(body).trace_id == sent.trace_id
            break
        channel.cancel()
        assert (tmp_path / "gitops" / "proc-test" / "kustomization.yaml").exists()
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        assert 'iotgw_provisioner_outcomes_total{outcome="ready"} 1.0' in metrics
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        users = BrokerUsers(ep.management_url, topology_broker.vhost, ep.username, ep.password)
        users.remove_client("proc-test")
        users.close()
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    traced = [r for r in records if r.get("trace_id") == str(sent.trace_id)]
    assert any(r["msg"] == "status published" for r in traced)
    assert "s3cret" not in out  # no secret, not even the test's, reaches the logs
