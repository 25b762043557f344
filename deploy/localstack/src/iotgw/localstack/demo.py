"""The demo: the whole platform on this machine, a purchase provisioned, telemetry flowing.

1. the local stack (own RabbitMQ with MQTT, own InfluxDB) comes up;
2. ingest, presence, provisioner (manifests target) and the api start as their own processes;
3. a customer buys modules through the HTTP API and the order goes Pending -> Ready;
4. the purchased modules come alive in the simulator with the credentials the purchase issued
   (each its own broker user, created by the provisioner) and publish telemetry;
5. a live view shows modules online, messages/s, points written, dead letters until Ctrl-C
   (or `--duration`), then everything the demo started is stopped.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
from rich.console import Console
from rich.live import Live
from rich.table import Table

from iotgw.contracts import measurements
from iotgw.contracts.settings import load_settings
from iotgw.localstack.processes import StackError, free_ports, port_in_use, wait_until
from iotgw.localstack.stack import Stack, StackSettings
from iotgw.localstack.supervisor import Supervisor

CLIENT = "acme"
PRODUCT = "Product-A"
PLATFORM = ("ingest", "presence", "provisioner", "api")
# Every platform consumer attached to its queue means the pipeline is ready end to end.
CONSUMED_QUEUES = {
    "ingest": "q.telemetry",
    "presence": "q.status",
    "provisioner": "q.provisioning",
    "api": "q.api.status",
}
VIEW_REFRESH_S = 1.0


@dataclass(frozen=True)
class DemoOptions:
    """What `iotgw demo` was asked for."""

    modules: int = 200
    rate_hz: float = 0.5
    duration_s: float | None = None
    api_port: int = 8000


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM stops the demo the same clean way as Ctrl-C.
    raise KeyboardInterrupt


def run_demo(options: DemoOptions) -> int:
    """Run the demo; 0 when the purchase went Ready and telemetry reached InfluxDB."""
    console = Console()
    cfg = load_settings(StackSettings)
    stack = Stack.from_settings(cfg)
    demo_dir = stack.state_dir.parent / "demo"
    signal.signal(signal.SIGTERM, _interrupt)

    console.print("[bold]1/5[/] local stack: own RabbitMQ (MQTT plugin) and InfluxDB")
    started_stack = stack.up(install=cfg.install_packages)
    supervisor = Supervisor(demo_dir / "logs")
    try:
        return _run(console, options, stack, demo_dir, supervisor)
    except KeyboardInterrupt:
        console.print("\nstopping ...")
        return 0
    finally:
        supervisor.stop_all()
        if started_stack:
            stack.down()
        console.print(
            "stopped everything the demo started"
            + ("" if started_stack else " (the stack was already running and stays up)")
        )


def _run(
    console: Console, options: DemoOptions, stack: Stack, demo_dir: Path, sup: Supervisor
) -> int:
    api_port = options.api_port if not port_in_use(options.api_port) else free_ports(1)[0]
    # Each demo starts from an empty registry and manifests folder (logs are kept).
    for leftover in ("registry.db", "registry.db-wal", "registry.db-shm"):
        (demo_dir / leftover).unlink(missing_ok=True)
    shutil.rmtree(demo_dir / "manifests", ignore_errors=True)
    operator_key = secrets.token_urlsafe(24)
    env = _platform_env(stack, demo_dir, api_port, operator_key)
    api = f"http://127.0.0.1:{api_port}"

    console.print("[bold]2/5[/] platform processes: " + ", ".join(PLATFORM))
    for name in PLATFORM:
        sup.start(name, [_program(f"iotgw-{name}")], env)
    _wait_platform(stack, sup, api)

    console.print(f"[bold]3/5[/] {CLIENT} buys {options.modules} x {PRODUCT} through the API")
    client_key, order = _buy(api, operator_key, options.modules)
    console.print(f"    order {order['id']} trace_id {order['trace_id']}: {order['status']}")
    ready = _follow_order(console, api, client_key, order["id"], sup)
    if ready["status"] != "Ready":
        console.print(f"[red]order ended {ready['status']}: {ready.get('reason')}[/]")
        return 1

    console.print(f"[bold]4/5[/] {options.modules} purchased modules come alive (simulator)")
    credentials = demo_dir / "credentials.json"
    _write_private(
        credentials,
        json.dumps(
            [{"client": CLIENT, "device": d["id"], "secret": d["secret"]} for d in order["devices"]]
        ),
    )
    sup.start(
        "sim",
        [
            _program("iotgw-sim"),
            "--json",
            "--credentials",
            str(credentials),
            "--rate",
            str(options.rate_hz),
            "--duration",
            str(options.duration_s or 365 * 86_400),
        ],
        env,
    )
    _print_where(console, api, env, client_key, operator_key)

    console.print("[bold]5/5[/] live view (Ctrl-C stops everything the demo started)")
    points = _live_view(console, stack, api, client_key, sup, options.duration_s)
    if points == 0:
        console.print("[red]no telemetry reached InfluxDB[/]")
        return 1
    return 0


def _program(name: str) -> str:
    """A console script of this environment (the demo may run without .venv/bin on PATH)."""
    return str(Path(sys.executable).parent / name)


def _platform_env(stack: Stack, demo_dir: Path, api_port: int, operator_key: str) -> dict[str, str]:
    demo_dir.mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        **stack.environment(),
        "IOTGW_DATABASE_URL": f"sqlite:///{demo_dir / 'registry.db'}",
        "IOTGW_API_PORT": str(api_port),
        "IOTGW_OPERATOR_KEY": operator_key,
        "IOTGW_PROVISIONER_TARGET": "manifests",
        "IOTGW_MANIFESTS_DIR": str(demo_dir / "manifests"),
        "IOTGW_LOG_LEVEL": "INFO",
    }


def _wait_platform(stack: Stack, sup: Supervisor, api: str) -> None:
    def ready() -> bool:
        if sup.exited():
            raise StackError("platform process stopped: " + ", ".join(sup.exited()))
        try:
            if httpx.get(api + "/readyz", timeout=2).status_code != 200:
                return False
        except httpx.HTTPError:
            return False
        vhost = "%2F"
        for queue in CONSUMED_QUEUES.values():
            info = stack.rabbit.api("GET", f"/api/queues/{vhost}/{queue}")
            if info.status_code != 200 or info.json().get("consumers", 0) < 1:
                return False
        return True

    wait_until(ready, 90, "the platform (api ready, every consumer attached)", interval=0.5)


def _buy(api: str, operator_key: str, modules: int) -> tuple[str, dict[str, Any]]:
    operator = {"Authorization": f"Bearer {operator_key}"}
    created = httpx.post(
        api + "/v1/operator/clients", json={"name": CLIENT}, headers=operator, timeout=30
    )
    if created.status_code == 409:
        created = httpx.post(api + f"/v1/operator/clients/{CLIENT}/keys", headers=operator)
    created.raise_for_status()
    key = str(created.json()["api_key"])
    order = httpx.post(
        api + "/v1/orders",
        json={
            "product": PRODUCT,
            "environment": "Development",
            "archtype": "SaaS",
            "hardware": "Classic",
            "quantity": modules,
        },
        headers={"Authorization": f"Bearer {key}", "Idempotency-Key": str(uuid.uuid4())},
        timeout=60,
    )
    if order.status_code >= 300:
        raise StackError(f"POST /v1/orders: {order.status_code} {order.text}")
    return key, order.json()


def _follow_order(
    console: Console, api: str, key: str, order_id: str, sup: Supervisor
) -> dict[str, Any]:
    """Poll the order until Ready or Failed, printing each status change."""
    headers = {"Authorization": f"Bearer {key}"}
    seen = "Pending"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if sup.exited():
            raise StackError("platform process stopped: " + ", ".join(sup.exited()))
        order: dict[str, Any] = httpx.get(api + f"/v1/orders/{order_id}", headers=headers).json()
        if order["status"] != seen:
            seen = order["status"]
            console.print(f"    order {order_id}: {seen}")
        if seen in ("Ready", "Failed"):
            return order
        time.sleep(0.3)
    raise StackError(f"order {order_id} did not reach Ready within 120 s (still {seen})")


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def _print_where(
    console: Console, api: str, env: dict[str, str], client_key: str, operator_key: str
) -> None:
    demo_dir = Path(env["IOTGW_MANIFESTS_DIR"]).parent
    rows = {
        "portal": f"{api}/portal (API key in {demo_dir / 'api-keys.json'})",
        "operator page": f"{api}/operator/clients (operator key in the same file)",
        "API docs": f"{api}/docs",
        "manifests": env["IOTGW_MANIFESTS_DIR"],
        "Grafana": f"InfluxDB (InfluxQL) datasource {env['IOTGW_INFLUX_URL']}, database iotgw;"
        " dashboards in dashboards/grafana/",
        "logs": str(demo_dir / "logs"),
    }
    for label, where in rows.items():
        console.print(f"    {label + ':':15}{where}")
    _write_private(
        Path(env["IOTGW_MANIFESTS_DIR"]).parent / "api-keys.json",
        json.dumps({"client": CLIENT, "api_key": client_key, "operator_key": operator_key}),
    )


@dataclass
class Figures:
    """One refresh of the live view."""

    online: int
    modules: int
    rate: float
    points: int
    dead_letters: int


def _figures(stack: Stack, api: str, key: str) -> Figures:
    devices = httpx.get(
        api + "/v1/devices", headers={"Authorization": f"Bearer {key}"}, params={"limit": 1000}
    ).json()
    queues = stack.rabbit.api("GET", "/api/queues/%2F").json()
    rate = 0.0
    dead = 0
    for queue in queues:
        if queue["name"] == "q.telemetry":
            rate = queue.get("message_stats", {}).get("publish_details", {}).get("rate", 0.0)
        if queue["name"].endswith(".dead"):
            dead += int(queue.get("messages", 0))
    points = stack.influx.scalar(
        # CLIENT is a constant DNS label: nothing from outside reaches this query.
        f"SELECT count(seq) FROM {measurements.TELEMETRY} WHERE client = '{CLIENT}'",  # noqa: S608
        db="iotgw",
    )
    return Figures(sum(1 for d in devices if d["online"]), len(devices), rate, points, dead)


def _table(fig: Figures, elapsed: float, problems: list[str]) -> Table:
    table = Table(title=f"iotgw demo, {elapsed:.0f} s", show_header=False)
    table.add_row("modules online", f"{fig.online} / {fig.modules}")
    table.add_row("telemetry messages/s", f"{fig.rate:.1f}")
    table.add_row("points written to InfluxDB", str(fig.points))
    table.add_row("dead letters", str(fig.dead_letters))
    if problems:
        table.add_row("[red]stopped[/]", ", ".join(problems))
    return table


def _live_view(
    console: Console,
    stack: Stack,
    api: str,
    key: str,
    sup: Supervisor,
    duration: float | None,
) -> int:
    start = time.monotonic()
    fig = _figures(stack, api, key)
    with Live(_table(fig, 0, []), console=console, refresh_per_second=2) as view:
        try:
            while duration is None or time.monotonic() - start < duration:
                time.sleep(VIEW_REFRESH_S)
                fig = _figures(stack, api, key)
                view.update(_table(fig, time.monotonic() - start, sup.exited()))
        except KeyboardInterrupt:
            # Ctrl-C is how the demo is meant to end: report, then stop everything.
            pass
    fig = _figures(stack, api, key)
    console.print(json.dumps(fig.__dict__))
    return fig.points
