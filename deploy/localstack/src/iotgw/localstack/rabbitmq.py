"""A RabbitMQ node of our own (MQTT and management plugins) with its own ports and data dir.

Told apart from any other node on the machine by its node name, config, plugin file, data and
log dirs, pid file, distribution port and its own epmd port; its Erlang cookie lives in its own
HOME, so `rabbitmqctl` for it never talks to the machine's node.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import urllib.parse
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from iotgw.localstack.processes import (
    StackError,
    chown_tree,
    free_ports,
    live_pid,
    pid_alive,
    require_free,
    run,
    service_user,
    spawn,
    tail,
    tcp_open,
    terminate,
    wait_until,
)

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
ADMIN_USER = "guest"
ADMIN_PASSWORD = "guest"  # noqa: S105 - RabbitMQ's default, accepted from loopback only


@dataclass(frozen=True)
class RabbitEndpoints:
    """Where a running node answers."""

    amqp_port: int
    mqtt_port: int
    management_port: int
    dist_port: int
    epmd_port: int
    node_name: str
    host: str = "127.0.0.1"
    username: str = ADMIN_USER
    password: str = ADMIN_PASSWORD
    # More addresses the MQTT listener binds too, on the same port (a test host's veth
    # address in a network namespace the test made); empty for every other use.
    mqtt_extra_hosts: tuple[str, ...] = ()

    def amqp_url(self, vhost: str = "/") -> str:
        """AMQP URL for pika, with the admin credentials."""
        return (
            f"amqp://{self.username}:{self.password}@{self.host}:{self.amqp_port}/"
            f"{urllib.parse.quote(vhost, safe='')}"
        )

    @property
    def management_url(self) -> str:
        """Base URL of the management HTTP API."""
        return f"http://{self.host}:{self.management_port}"

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for the stack's state file."""
        return asdict(self)


class RabbitNode:
    """Start, stop and administer one node under `base_dir`."""

    def __init__(self, base_dir: Path, endpoints: RabbitEndpoints) -> None:
        self.base_dir = base_dir
        self.endpoints = endpoints
        self.user = service_user("rabbitmq")

    @classmethod
    def on_free_ports(
        cls, base_dir: Path, name: str, mqtt_extra_hosts: tuple[str, ...] = ()
    ) -> RabbitNode:
        """A node (not started) under `base_dir` on ports free right now, named `name-<port>`."""
        amqp, mqtt, management, dist, epmd = free_ports(5)
        return cls(
            base_dir,
            RabbitEndpoints(
                amqp_port=amqp,
                mqtt_port=mqtt,
                management_port=management,
                dist_port=dist,
                epmd_port=epmd,
                node_name=f"{name}-{amqp}@localhost",
                mqtt_extra_hosts=mqtt_extra_hosts,
            ),
        )

    @property
    def log_file(self) -> Path:
        """The node's console output."""
        return self.base_dir / "log" / "console.log"

    @property
    def pid_file(self) -> Path:
        """Written by the node once it runs."""
        return self.base_dir / "rabbitmq.pid"

    def _env(self) -> dict[str, str]:
        # Start from a clean slate: the machine's own node exports RABBITMQ_* and ERL_* settings.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("RABBITMQ_", "ERL_")) and k != "HOME"
        }
        d = self.base_dir
        ep = self.endpoints
        env.update(
            HOME=str(d / "home"),
            RABBITMQ_NODENAME=ep.node_name,
            RABBITMQ_USE_LONGNAME="false",
            RABBITMQ_NODE_IP_ADDRESS=ep.host,
            RABBITMQ_NODE_PORT=str(ep.amqp_port),
            RABBITMQ_DIST_PORT=str(ep.dist_port),
            RABBITMQ_CONFIG_FILE=str(d / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(d / "advanced.config"),
            RABBITMQ_CONF_ENV_FILE=str(d / "rabbitmq-env.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(d / "enabled_plugins"),
            RABBITMQ_MNESIA_BASE=str(d / "mnesia"),
            RABBITMQ_LOG_BASE=str(d / "log"),
            RABBITMQ_PID_FILE=str(self.pid_file),
            ERL_EPMD_PORT=str(ep.epmd_port),
            ERL_EPMD_ADDRESS=ep.host,
        )
        return env

    def _write_config(self) -> None:
        d = self.base_dir
        ep = self.endpoints
        for sub in ("home", "mnesia", "log"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "rabbitmq.conf").write_text(
            "\n".join(
                [
                    f"listeners.tcp.default = {ep.host}:{ep.amqp_port}",
                    f"mqtt.listeners.tcp.default = {ep.host}:{ep.mqtt_port}",
                    *(
                        f"mqtt.listeners.tcp.extra{i} = {host}:{ep.mqtt_port}"
                        for i, host in enumerate(ep.mqtt_extra_hosts)
                    ),
                    "mqtt.allow_anonymous = false",
                    "mqtt.vhost = /",
                    "mqtt.exchange = amq.topic",
                    f"management.tcp.ip = {ep.host}",
                    f"management.tcp.port = {ep.management_port}",
                    "log.console = false",
                    "log.file.level = warning",
                    "disk_free_limit.absolute = 200MB",
                    # Many small MQTT connections: keep per-connection buffers small.
                    "mqtt.tcp_listen_options.sndbuf = 16384",
                    "mqtt.tcp_listen_options.recbuf = 16384",
                    "",
                ]
            )
        )
        (d / "advanced.config").write_text("[].\n")
        (d / "rabbitmq-env.conf").write_text("")
        (d / "enabled_plugins").write_text("[rabbitmq_management,rabbitmq_mqtt].\n")
        chown_tree(d, self.user)

    def start(self, timeout: float = 90) -> None:
        """Start the node and wait until AMQP, MQTT and the management API answer."""
        ep = self.endpoints
        require_free(
            {
                "rabbitmq amqp": ep.amqp_port,
                "rabbitmq mqtt": ep.mqtt_port,
                "rabbitmq management": ep.management_port,
                "rabbitmq distribution": ep.dist_port,
                "rabbitmq epmd": ep.epmd_port,
            }
        )
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.base_dir.chmod(0o755)
        self._write_config()
        proc = spawn(
            [str(RABBIT_BIN / "rabbitmq-server")],
            env=self._env(),
            log_file=self.log_file,
            user=self.user,
            cwd=self.base_dir,
        )

        def ready() -> bool:
            if proc.poll() is not None:
                raise StackError(
                    f"rabbitmq node {ep.node_name} exited with {proc.returncode}:\n"
                    + tail(self.log_file)
                )
            return tcp_open(ep.mqtt_port) and self.management_ok()

        wait_until(ready, timeout, f"rabbitmq node {ep.node_name}")

    def management_ok(self) -> bool:
        """True when the management API answers with our credentials."""
        try:
            return self.api("GET", "/api/overview").status_code == 200
        except httpx.HTTPError:
            return False

    def running(self) -> bool:
        """True when the node's pid is alive and it answers."""
        return self.pid() is not None and self.management_ok()

    def pid(self) -> int | None:
        """The node's OS pid, if its pid file names a live process."""
        return live_pid(self.pid_file)

    def ctl(self, *args: str, timeout: float = 60) -> str:
        """Run `rabbitmqctl` against this node; raise StackError on failure."""
        result = run(
            [str(RABBIT_BIN / "rabbitmqctl"), "-n", self.endpoints.node_name, *args],
            env=self._env(),
            user=self.user,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise StackError(f"rabbitmqctl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def stop(self) -> None:
        """Stop the node and its own epmd; harmless when it is not running."""
        pid = self.pid()
        if pid is not None:
            try:
                self.ctl("stop", str(self.pid_file), timeout=60)
                # `down` promises the ports are free when it returns, so make sure of it.
                wait_until(
                    lambda: not pid_alive(pid) and not tcp_open(self.endpoints.amqp_port),
                    30,
                    f"rabbitmq node {self.endpoints.node_name} to stop",
                )
            except (StackError, OSError, subprocess.TimeoutExpired):
                # A node holding thousands of MQTT session queues can take longer than that.
                terminate(pid)
        # The node started an epmd on its own port; it holds no other node, so stop it.
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            run(["epmd", "-port", str(self.endpoints.epmd_port), "-kill"], env=self._env())

    def stop_app(self) -> None:
        """Stop the broker inside the running node (an outage: every connection drops)."""
        self.ctl("stop_app")

    def start_app(self, timeout: float = 60) -> None:
        """Start the broker again after `stop_app` and wait until MQTT accepts connections."""
        self.ctl("start_app")
        wait_until(
            lambda: tcp_open(self.endpoints.mqtt_port) and self.management_ok(),
            timeout,
            "rabbitmq after start_app",
        )

    def api(self, method: str, path: str, json: Any = None) -> httpx.Response:
        """Call the management HTTP API with the admin credentials."""
        ep = self.endpoints
        return httpx.request(
            method,
            ep.management_url + path,
            json=json,
            auth=(ep.username, ep.password),
            timeout=30,
        )

    def _ok(self, response: httpx.Response) -> httpx.Response:
        if response.status_code >= 300:
            raise StackError(
                f"management API {response.request.method} {response.request.url.path}: "
                f"{response.status_code} {response.text}"
            )
        return response

    def add_vhost(self, vhost: str) -> None:
        """Create `vhost` and give the admin user full rights on it."""
        q = urllib.parse.quote(vhost, safe="")
        self._ok(self.api("PUT", f"/api/vhosts/{q}"))
        self.set_permissions(self.endpoints.username, vhost, ".*", ".*", ".*")

    def delete_vhost(self, vhost: str) -> None:
        """Delete `vhost` and everything in it."""
        q = urllib.parse.quote(vhost, safe="")
        response = self.api("DELETE", f"/api/vhosts/{q}")
        if response.status_code != 404:
            self._ok(response)

    def add_user(self, username: str, password: str, tags: str = "") -> None:
        """Create or update a user."""
        q = urllib.parse.quote(username, safe="")
        self._ok(self.api("PUT", f"/api/users/{q}", {"password": password, "tags": tags}))

    def set_permissions(
        self, username: str, vhost: str, configure: str, write: str, read: str
    ) -> None:
        """Set a user's configure/write/read regexes on `vhost`."""
        qv = urllib.parse.quote(vhost, safe="")
        qu = urllib.parse.quote(username, safe="")
        body = {"configure": configure, "write": write, "read": read}
        self._ok(self.api("PUT", f"/api/permissions/{qv}/{qu}", body))

    def queue_info(self, vhost: str, queue: str) -> dict[str, Any]:
        """Management API view of one queue (messages, consumers, ...)."""
        qv = urllib.parse.quote(vhost, safe="")
        qq = urllib.parse.quote(queue, safe="")
        data: dict[str, Any] = self._ok(self.api("GET", f"/api/queues/{qv}/{qq}")).json()
        return data
