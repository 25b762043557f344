"""The simulator runs purchased modules with the secrets their purchase issued."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from iotgw.contracts.credentials import device_username, new_secret
from iotgw.contracts.topology import TELEMETRY_QUEUE
from iotgw.localstack.pytest_plugin import Broker


def _sim(broker: Broker, *flags: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOTGW_")}
    env.update(
        IOTGW_MQTT_HOST=broker.mqtt_host,
        IOTGW_MQTT_PORT=str(broker.mqtt_port),
        IOTGW_LOG_LEVEL="WARNING",
    )
    return subprocess.run(
        [sys.executable, "-m", "iotgw.device_sim", "--json", "--vhost", broker.vhost, *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_issued_credentials_connect_each_module_with_its_own_secret(
    topology_broker: Broker, tmp_path: Path
) -> None:
    node = topology_broker.node
    issued = [{"client": "acme", "device": f"m-{i}", "secret": new_secret()} for i in range(3)]
    for entry in issued:
        user = device_username(entry["client"], entry["device"])
        node.add_user(user, entry["secret"])
        node.set_permissions(user, topology_broker.vhost, ".*", ".*", ".*")
    credentials = tmp_path / "credentials.json"
    credentials.write_text(json.dumps(issued))

    result = _sim(topology_broker, "--credentials", str(credentials), "--duration", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    totals = json.loads(result.stdout.strip().splitlines()[-1])
    assert totals["max_connected"] == 3
    assert totals["acked"] > 0
    queued = topology_broker.channel().queue_declare(TELEMETRY_QUEUE, passive=True)
    assert queued.method.message_count == totals["acked"]


def test_credentials_and_provision_together_are_refused(
    topology_broker: Broker, tmp_path: Path
) -> None:
    credentials = tmp_path / "credentials.json"
    credentials.write_text("[]")
    result = _sim(topology_broker, "--credentials", str(credentials), "--provision")
    assert result.returncode != 0
    assert "IOTGW_SIM_PROVISION" in result.stderr
