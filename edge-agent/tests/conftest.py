"""Fixtures for the agent's tests: broker users per device and the agent run through its CLI."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from iotgw.localstack.pytest_plugin import Broker

AGENT = [sys.executable, "-m", "iotgw.edge_agent"]


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `check` until true; fail the test naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


@dataclass
class AgentRun:
    """An agent subprocess with its config file and state dir."""

    config: Path
    state_dir: Path
    log: Path
    env: dict[str, str]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        """The current process."""
        return self.procs[-1]

    def start(self, **overrides: Any) -> subprocess.Popen[bytes]:
        """Start (or restart) the agent; `overrides` become IOTGW_* variables."""
        env = dict(self.env)
        env.update({f"IOTGW_{k.upper()}": str(v) for k, v in overrides.items()})
        with self.log.open("ab") as log:
            proc = subprocess.Popen(
                [*AGENT, "--config", str(self.config)], env=env, stdout=log, stderr=log
            )
        self.procs.append(proc)
        return proc

    def kill9(self) -> None:
        """SIGKILL the current process."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> int:
        """SIGTERM and wait; returns the exit code."""
        self.proc.terminate()
        return self.proc.wait(20)

    def db(self, sql: str) -> Any:
        """Run one read-only query on the agent's buffer (it is WAL: readers do not block it)."""
        path = self.state_dir / "agent.db"
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            return db.execute(sql).fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return None  # the agent has created the file but not its schema yet
            raise
        finally:
            db.close()

    def buffered(self) -> int:
        """Readings in the buffer."""
        if not (self.state_dir / "agent.db").exists():
            return 0
        row = self.db("SELECT COUNT(*) FROM readings")
        return int(row[0]) if row else 0

    def next_seq(self) -> int:
        """The seq the next reading will get."""
        if not (self.state_dir / "agent.db").exists():
            return 0
        row = self.db("SELECT next_seq FROM devices")
        return int(row[0]) if row else 0


@pytest.fixture
def device_user(broker: Broker) -> Callable[[str, str], tuple[str, str]]:
    """Create the broker user of a device; returns (MQTT username with vhost, password)."""

    def make(client: str, device: str) -> tuple[str, str]:
        user, password = f"{client}.{device}", uuid.uuid4().hex
        broker.node.add_user(user, password)
        broker.node.set_permissions(user, broker.vhost, ".*", ".*", ".*")
        return user, password

    return make


@pytest.fixture
def agent(
    tmp_path: Path, broker: Broker, device_user: Callable[[str, str], tuple[str, str]]
) -> Iterator[AgentRun]:
    """An agent for device acme/dev-1 on the test's vhost, sampling every 50 ms (not started)."""
    _, password = device_user("acme", "dev-1")
    state = tmp_path / "state"
    config = tmp_path / "agent.toml"
    config.write_text(
        "\n".join(
            [
                'client = "acme"',
                'device = "dev-1"',
                f'mqtt_host = "{broker.mqtt_host}"',
                f"mqtt_port = {broker.mqtt_port}",
                f'mqtt_vhost = "{broker.vhost}"',
                f'state_dir = "{state}"',
                'sensors = ["counter"]',
                "sampling_interval_s = 0.05",
                "backoff_min_s = 0.2",
                "backoff_max_s = 1.0",
                "mqtt_keepalive_s = 5",
                "",
            ]
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOTGW_")}
    # The secret comes from the environment, as it would on a module (not from the file).
    env["IOTGW_MQTT_PASSWORD"] = password
    run = AgentRun(config, state, tmp_path / "agent.log", env)
    yield run
    for proc in run.procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def drain(
    broker: Broker, queue: str, until: Callable[[list[dict[str, Any]]], bool], timeout: float = 60
) -> list[dict[str, Any]]:
    """Consume JSON bodies from `queue` until `until(bodies)` holds; fail after `timeout` s."""
    channel = broker.channel()
    bodies: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    for method, _props, body in channel.consume(queue, inactivity_timeout=0.5):
        if method is not None:
            bodies.append(json.loads(body))
            channel.basic_ack(method.delivery_tag)
        if until(bodies):
            break
        if time.monotonic() > deadline:
            pytest.fail(f"{queue}: condition not met after {timeout} s; got {len(bodies)} messages")
    channel.cancel()
    return bodies


@pytest.fixture
def consume(broker: Broker) -> Callable[..., list[dict[str, Any]]]:
    """`consume(queue, until, timeout)`: bodies of `queue` until `until(bodies)` holds."""

    def run(
        queue: str, until: Callable[[list[dict[str, Any]]], bool], timeout: float = 60
    ) -> list[dict[str, Any]]:
        return drain(broker, queue, until, timeout)

    return run


def assert_complete_in_order(bodies: list[dict[str, Any]], last_seq: int) -> None:
    """Every seq 0..last_seq arrived; first arrivals in ascending order (resends may repeat)."""
    first: list[int] = []
    seen: set[int] = set()
    for body in bodies:
        if body["seq"] not in seen:
            seen.add(body["seq"])
            first.append(body["seq"])
    missing = sorted(set(range(last_seq + 1)) - seen)
    assert not missing, f"missing seqs: {missing[:20]} ({len(missing)} in all)"
    assert first == sorted(first), "readings arrived out of order"


@pytest.fixture
def wait() -> Callable[[Callable[[], bool], float, str], None]:
    """`wait(check, timeout, what)`: poll until `check()`; fails naming `what`."""
    return wait_for


@pytest.fixture
def complete_in_order() -> Callable[[list[dict[str, Any]], int], None]:
    """`complete_in_order(bodies, last_seq)`: asserts none missing, first arrivals ordered."""
    return assert_complete_in_order
