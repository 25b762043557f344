"""Fault drills: run the platform's processes, break something, count what survived.

The ledger of a drill is the modules' own on-disk buffer (the agent's and the simulator's
SQLite store): a reading gets its per-device `seq` before it is sent and leaves the buffer only
when its PUBACK arrives, so after a drain `issued - buffered - dropped` is exactly what the
broker acknowledged, even across a `kill -9` of the simulator. InfluxDB is the other side:
distinct `seq` per device. Orders are counted the same way through the api (accepted vs Ready).

Results go to a JSON file when `IOTGW_DRILLS_RESULTS` names one; `python -m
iotgw.localstack.drills render RESULTS.json docs/fault-drills.md` turns it into the table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from iotgw.contracts import measurements
from iotgw.contracts.credentials import device_username
from iotgw.localstack.influxdb import InfluxNode
from iotgw.localstack.processes import StackError
from iotgw.localstack.rabbitmq import RabbitNode
from iotgw.localstack.supervisor import Supervisor

RESULTS_ENV = "IOTGW_DRILLS_RESULTS"
SIM_SECRET = "drill-fleet-secret"  # noqa: S105 - a throwaway fleet on a test broker
POLL_S = 0.2


def program(name: str) -> str:
    """A console script of this environment (works without .venv/bin on PATH)."""
    return str(Path(sys.executable).parent / name)


def poll(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll `check` until True; the seconds it took. StackError naming `what` on timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(POLL_S)
    raise StackError(f"{what}: not within {timeout:.0f} s")


# --- results -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DrillResult:
    """One row of the fault-drill table."""

    scenario: str
    unit: str
    sent: int
    acknowledged: int
    stored: int
    lost: int
    recovery_s: float
    outage_s: float
    note: str = ""


def record(result: DrillResult, path: str | None = None) -> None:
    """Add `result` to the JSON file named by IOTGW_DRILLS_RESULTS (replacing its scenario)."""
    target = path or os.environ.get(RESULTS_ENV)
    if not target:
        return
    file = Path(target)
    rows: list[dict[str, Any]] = json.loads(file.read_text()) if file.is_file() else []
    rows = [r for r in rows if r["scenario"] != result.scenario] + [asdict(result)]
    file.write_text(json.dumps(rows, indent=2) + "\n")


def render(rows: list[dict[str, Any]]) -> str:
    """The markdown table of drill results."""
    lines = [
        "| scenario | unit | sent | acknowledged | stored | lost | outage s | recovery s | note |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['scenario']} | {r['unit']} | {r['sent']} | {r['acknowledged']} | "
            f"{r['stored']} | {r['lost']} | {r['outage_s']:.1f} | {r['recovery_s']:.1f} | "
            f"{r['note']} |"
        )
    return "\n".join(lines) + "\n"


def render_doc(results: Path, doc: Path) -> None:
    """Replace the table between the markers of `doc` with the one from `results`."""
    table = render(json.loads(results.read_text()))
    begin, end = "<!-- drills:begin -->", "<!-- drills:end -->"
    text = doc.read_text()
    head, rest = text.split(begin, 1)
    _old, tail = rest.split(end, 1)
    doc.write_text(f"{head}{begin}\n{table}{end}{tail}")


# --- the modules' ledger -------------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceLedger:
    """What one module's buffer says."""

    issued: int
    buffered: int
    dropped: int
    epoch: int

    @property
    def acknowledged(self) -> int:
        """Readings whose PUBACK arrived (dropped ones never left the buffer that way)."""
        return self.issued - self.buffered - self.dropped


def read_ledger(db: Path) -> dict[str, DeviceLedger]:
    """Per `client/device`: the buffer's counters, read while the module may still run."""
    if not db.is_file():
        return {}
    # A second connection on a WAL database reads a consistent snapshot without blocking.
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        buffered = {
            d: (int(n), int(top))
            for d, n, top in con.execute(
                "SELECT device, COUNT(*), MAX(seq) FROM readings GROUP BY device"
            ).fetchall()
        }
        rows = con.execute(
            "SELECT device, next_seq, dropped_overflow + dropped_expired, epoch FROM devices"
        ).fetchall()
    except sqlite3.OperationalError:
        return {}
    finally:
        con.close()
    ledger = {}
    for device, next_seq, dropped, epoch in rows:
        count, top = buffered.get(device, (0, -1))
        # `next_seq` in the table moves on PUBACK; a buffered reading may already hold a later one.
        issued = max(int(next_seq), top + 1)
        ledger[device] = DeviceLedger(issued, count, int(dropped), int(epoch))
    return ledger


@dataclass(frozen=True)
class Tally:
    """Sums over a fleet."""

    issued: int
    acknowledged: int
    buffered: int
    dropped: int


def tally(ledger: Mapping[str, DeviceLedger]) -> Tally:
    """Fleet-wide sums of a ledger."""
    return Tally(
        sum(d.issued for d in ledger.values()),
        sum(d.acknowledged for d in ledger.values()),
        sum(d.buffered for d in ledger.values()),
        sum(d.dropped for d in ledger.values()),
    )


def stored_per_device(
    influx: InfluxNode, database: str, client: str, distinct: bool = True
) -> dict[str, int]:
    """Distinct `seq` values (or points) stored per `client/device`; a replay rewrites the same
    point, so with seq never reused the two agree."""
    what = "distinct(seq)" if distinct else "seq"
    body = influx.query(
        f"SELECT count({what}) FROM {measurements.TELEMETRY} "  # noqa: S608 - our names
        f"WHERE {measurements.TAG_CLIENT} = '{client}' GROUP BY {measurements.TAG_DEVICE}",
        db=database,
    )
    out: dict[str, int] = {}
    results = body.get("results")
    for result in results if isinstance(results, list) else []:
        for series in result.get("series", []):
            out[f"{client}/{series['tags'][measurements.TAG_DEVICE]}"] = int(series["values"][0][1])
    return out


def stored_since(influx: InfluxNode, database: str, client: str, since: float) -> int:
    """Points of `client` whose reading time is after `since` (epoch seconds)."""
    return influx.scalar(
        f"SELECT count(seq) FROM {measurements.TELEMETRY} "  # noqa: S608 - our names
        f"WHERE {measurements.TAG_CLIENT} = '{client}' AND time > {int(since * 1e9)}",
        db=database,
    )


def lost_readings(ledger: Mapping[str, DeviceLedger], stored: Mapping[str, int]) -> int:
    """Acknowledged readings missing from InfluxDB, summed over devices."""
    return sum(max(0, d.acknowledged - stored.get(name, 0)) for name, d in ledger.items())


# --- the platform --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Coordinates:
    """Where a drill's platform finds its services."""

    rabbit: RabbitNode
    vhost: str
    influx: InfluxNode
    influx_database: str
    database_url: str
    work_dir: Path
    api_port: int
    operator_key: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def amqp_url(self) -> str:
        """AMQP URL of the drill's vhost."""
        return self.rabbit.endpoints.amqp_url(self.vhost)

    @property
    def api(self) -> str:
        """Base URL of the api."""
        return f"http://127.0.0.1:{self.api_port}"

    def env(self) -> dict[str, str]:
        """The environment every platform process of the drill runs with."""
        ep = self.rabbit.endpoints
        keep = {k: v for k, v in os.environ.items() if not k.startswith("IOTGW_")}
        return {
            **keep,
            "IOTGW_AMQP_URL": self.amqp_url,
            "IOTGW_MQTT_HOST": ep.host,
            "IOTGW_MQTT_PORT": str(ep.mqtt_port),
            "IOTGW_RABBITMQ_MANAGEMENT_URL": ep.management_url,
            "IOTGW_INFLUX_URL": self.influx.url,
            "IOTGW_INFLUX_DATABASE": self.influx_database,
            "IOTGW_DATABASE_URL": self.database_url,
            "IOTGW_API_PORT": str(self.api_port),
            "IOTGW_OPERATOR_KEY": self.operator_key,
            "IOTGW_PROVISIONER_TARGET": "manifests",
            "IOTGW_MANIFESTS_DIR": str(self.work_dir / "manifests"),
            "IOTGW_PRESENCE_MQTT_USERNAME": f"{self.vhost}:{ep.username}",
            "IOTGW_PRESENCE_MQTT_PASSWORD": ep.password,
            "IOTGW_PRESENCE_MQTT_CLIENT_ID": f"iotgw-presence-{self.vhost}",
            "IOTGW_SIM_SECRET": SIM_SECRET,
            "IOTGW_LOG_LEVEL": "INFO",
        }


CONSUMED_QUEUES = {
    "ingest": "q.telemetry",
    "presence": "q.status",
    "provisioner": "q.provisioning",
    "api": "q.api.status",
}


class Platform:
    """The platform's processes for one drill, under a Supervisor (logs in work_dir/logs)."""

    def __init__(self, where: Coordinates) -> None:
        self.where = where
        self.sup = Supervisor(where.work_dir / "logs")
        self.env = where.env()

    def start(self, *names: str) -> None:
        """Start platform processes by short name (ingest, presence, provisioner, api)."""
        for name in names:
            self.sup.start(name, [program(f"iotgw-{name}")], self.env)

    def wait_ready(self, *names: str, timeout: float = 90) -> float:
        """Until each named process consumes its queue (and the api answers /readyz)."""

        def ready() -> bool:
            self.check_alive()
            for name in names:
                if name == "api" and not _http_ok(self.where.api + "/readyz"):
                    return False
                if self.consumers(CONSUMED_QUEUES[name]) < 1:
                    return False
            return True

        return poll(ready, timeout, "platform ready: " + ", ".join(names))

    def consumers(self, queue: str) -> int:
        """Consumers attached to `queue` in the drill's vhost (0 while the broker is away)."""
        try:
            return int(self.where.rabbit.queue_info(self.where.vhost, queue).get("consumers", 0))
        except (StackError, httpx.HTTPError, ValueError):
            return 0

    def check_alive(self) -> None:
        """Raise when a supervised process stopped by itself (a drill must not need a hand)."""
        dead = [n for n in self.sup.exited() if not n.startswith(("sim ", "agent"))]
        if dead:
            raise StackError("platform process stopped on its own: " + ", ".join(dead))

    def start_sim(self, state_dir: Path, client: str, count: int, rate_hz: float) -> None:
        """The simulator (its users created first) on the drill's vhost, until stopped."""
        self.sup.start(
            "sim",
            [
                program("iotgw-sim"),
                "--json",
                "--provision",
                "--vhost",
                self.where.vhost,
                "--client",
                client,
                "--count",
                str(count),
                "--rate",
                str(rate_hz),
                "--duration",
                "86400",
                "--state-dir",
                str(state_dir),
                "--drain-timeout",
                "90",
            ],
            self.env,
        )

    def start_agent(
        self,
        name: str,
        agent: AgentIdentity,
        state_dir: Path,
        settings: Mapping[str, str],
        prefix: tuple[str, ...] = (),
    ) -> None:
        """`iotgw-agent` for one module (after `prefix`, e.g. `ip netns exec NS`)."""
        env = {
            **self.env,
            "IOTGW_CLIENT": agent.client,
            "IOTGW_DEVICE": agent.device,
            "IOTGW_MQTT_PASSWORD": agent.password,
            "IOTGW_STATE_DIR": str(state_dir),
            **settings,
        }
        if self.where.vhost != "/":
            env["IOTGW_MQTT_VHOST"] = self.where.vhost
        self.sup.start(name, [*prefix, program("iotgw-agent")], env)

    def stop(self, name: str, timeout: float = 120) -> int:
        """SIGTERM `name` and wait for its own clean exit (the simulator drains first)."""
        proc = self.sup.processes[name].proc
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=timeout)

    def log_tail(self, name: str, lines: int = 30) -> str:
        """The end of a process's log, for failure messages."""
        path = self.sup.log_dir / f"{name}.log"
        if not path.is_file():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def close(self) -> None:
        """Stop everything still running."""
        self.sup.stop_all()


@dataclass(frozen=True)
class AgentIdentity:
    """One module run by `iotgw-agent`."""

    client: str
    device: str
    password: str = field(default_factory=lambda: uuid.uuid4().hex)


def add_device_user(rabbit: RabbitNode, vhost: str, agent: AgentIdentity) -> None:
    """The module's broker user, as the provisioner would create it (full rights on the vhost:
    the drill tests delivery, not permissions)."""
    user = device_username(agent.client, agent.device)
    rabbit.add_user(user, agent.password)
    rabbit.set_permissions(user, vhost, ".*", ".*", ".*")


def delete_device_user(rabbit: RabbitNode, agent: AgentIdentity) -> None:
    """Remove the module's broker user: the broker closes its connection and refuses new ones."""
    user = urllib.parse.quote(device_username(agent.client, agent.device), safe="")
    response = rabbit.api("DELETE", f"/api/users/{user}")
    if response.status_code >= 300:
        raise StackError(f"delete user {user}: {response.status_code} {response.text}")


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def running(where: Coordinates) -> Iterator[Platform]:
    """A Platform that is stopped when the block ends."""
    platform = Platform(where)
    try:
        yield platform
    finally:
        platform.close()


# --- telemetry drill steps -----------------------------------------------------------------------
@dataclass
class TelemetryDrill:
    """Counts for a drill on the telemetry path (simulator or agent -> broker -> ingest)."""

    platform: Platform
    ledger_db: Path
    client: str

    def ledger(self) -> dict[str, DeviceLedger]:
        """The modules' buffers now."""
        return read_ledger(self.ledger_db)

    def stored(self) -> dict[str, int]:
        """InfluxDB now."""
        w = self.platform.where
        return stored_per_device(w.influx, w.influx_database, self.client)

    def wait_flowing(self, minimum: int, timeout: float = 60) -> None:
        """Until at least `minimum` readings are stored (the stream is going)."""
        poll(lambda: sum(self.stored().values()) >= minimum, timeout, "telemetry flowing")

    def recovery(self, lifted_at: float, timeout: float = 120) -> float:
        """Seconds from `lifted_at` (wall clock) until everything acknowledged by then is stored
        and a reading taken after it is stored too."""
        acked_then = tally(self.ledger()).acknowledged
        w = self.platform.where

        def caught_up() -> bool:
            self.platform.check_alive()
            if sum(self.stored().values()) < acked_then:
                return False
            return stored_since(w.influx, w.influx_database, self.client, lifted_at) > 0

        poll(caught_up, timeout, "recovery")
        return time.time() - lifted_at

    def points(self) -> int:
        """Points stored (not distinct seqs): more than distinct seqs means a seq was reused."""
        w = self.platform.where
        return sum(
            stored_per_device(w.influx, w.influx_database, self.client, distinct=False).values()
        )

    def settle(self, timeout: float = 90) -> tuple[Tally, int, int]:
        """After the modules stopped: (ledger sums, stored, lost) once InfluxDB has caught up
        with every acknowledged reading, or at `timeout` with what is missing."""
        ledger = self.ledger()
        acked = tally(ledger).acknowledged
        with contextlib.suppress(StackError):
            poll(lambda: sum(self.stored().values()) >= acked, timeout, "stored == acknowledged")
        stored = self.stored()
        return tally(ledger), sum(stored.values()), lost_readings(ledger, stored)


# --- a module behind its own network link ---------------------------------------------------------
@dataclass(frozen=True)
class NetnsLink:
    """A network namespace joined to the host by a veth pair on 10.231.<n>.0/30: the host side
    is .1 (the broker listens there), the module inside the namespace is .2."""

    n: int

    @property
    def namespace(self) -> str:
        """The namespace's name."""
        return f"iotgw-drill-{self.n}"

    @property
    def host_if(self) -> str:
        """The host side of the veth pair."""
        return f"iotgwd{self.n}h"

    @property
    def module_if(self) -> str:
        """The namespace side of the veth pair."""
        return f"iotgwd{self.n}m"

    @property
    def host_addr(self) -> str:
        """The broker's address as seen from the module."""
        return f"10.231.{self.n}.1"

    @property
    def module_addr(self) -> str:
        """The module's own address."""
        return f"10.231.{self.n}.2"

    @property
    def exec_prefix(self) -> tuple[str, ...]:
        """Argv prefix that runs a program inside the namespace."""
        return ("ip", "netns", "exec", self.namespace)

    def create(self) -> None:
        """Namespace, veth pair, addresses, links up."""
        ns = ("ip", "netns", "exec", self.namespace)
        run_quiet(["ip", "netns", "add", self.namespace])
        run_quiet(
            ["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.module_if]
        )
        run_quiet(["ip", "link", "set", self.module_if, "netns", self.namespace])
        run_quiet(["ip", "addr", "add", f"{self.host_addr}/30", "dev", self.host_if])
        run_quiet(["ip", "link", "set", self.host_if, "up"])
        run_quiet([*ns, "ip", "addr", "add", f"{self.module_addr}/30", "dev", self.module_if])
        run_quiet([*ns, "ip", "link", "set", self.module_if, "up"])
        run_quiet([*ns, "ip", "link", "set", "lo", "up"])

    def set_up(self, up: bool) -> None:
        """Link up or down on the host side: while down, packets vanish (no RST, no FIN)."""
        run_quiet(["ip", "link", "set", self.host_if, "up" if up else "down"])

    def delete(self) -> None:
        """Remove the veth pair and the namespace (harmless when already gone)."""
        for argv in (
            ["ip", "link", "del", self.host_if],
            ["ip", "netns", "del", self.namespace],
        ):
            subprocess.run(argv, capture_output=True, timeout=30, check=False)


# --- orders --------------------------------------------------------------------------------------
ORDER = {
    "product": "Product-A",
    "environment": "Development",
    "archtype": "SaaS",
    "hardware": "Classic",
    "quantity": 1,
}


def create_client(api: str, operator_key: str, name: str) -> str:
    """A client through the operator API; its API key."""
    response = httpx.post(
        api + "/v1/operator/clients",
        json={"name": name},
        headers={"Authorization": f"Bearer {operator_key}"},
        timeout=30,
    )
    response.raise_for_status()
    return str(response.json()["api_key"])


@dataclass
class OrderBook:
    """Orders placed as a customer would: one Idempotency-Key per intended order, retried
    (same key) until the api accepts it, so an api outage delays orders but never doubles one."""

    api: str
    key: str
    attempted: int = 0
    accepted: dict[str, float] = field(default_factory=dict)  # order id -> accepted at (wall)
    created: dict[str, dict[str, Any]] = field(default_factory=dict)  # order id -> first answer

    def place(self, quantity: int = 1, give_up_s: float = 60) -> str:
        """Place one order of `quantity` modules; its id once accepted."""
        self.attempted += 1
        idem = str(uuid.uuid4())
        deadline = time.monotonic() + give_up_s
        while True:
            try:
                response = httpx.post(
                    self.api + "/v1/orders",
                    json={**ORDER, "quantity": quantity},
                    headers={"Authorization": f"Bearer {self.key}", "Idempotency-Key": idem},
                    timeout=10,
                )
                if response.status_code < 300:
                    body = response.json()
                    order_id = str(body["id"])
                    self.accepted[order_id] = time.time()
                    self.created.setdefault(order_id, body)
                    return order_id
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise StackError(f"order not accepted within {give_up_s:.0f} s")
            time.sleep(POLL_S)

    def status(self, order_id: str) -> str:
        """An order's status ('' while the api does not answer)."""
        try:
            response = httpx.get(
                self.api + f"/v1/orders/{order_id}",
                headers={"Authorization": f"Bearer {self.key}"},
                timeout=10,
            )
        except httpx.HTTPError:
            return ""
        return str(response.json()["status"]) if response.status_code == 200 else ""

    def ready(self, since: float = 0.0) -> int:
        """Accepted orders (accepted after `since`, wall clock) that are Ready now."""
        return sum(
            1 for o, at in list(self.accepted.items()) if at > since and self.status(o) == "Ready"
        )

    def all_ready(self) -> bool:
        """Every accepted order is Ready."""
        return self.ready() == len(self.accepted)


class OrderStream:
    """A customer placing an order every `interval_s` on a thread, until stopped."""

    def __init__(self, book: OrderBook, interval_s: float = 0.3) -> None:
        self.book = book
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="orders", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval_s):
                self.book.place()
        except BaseException as exc:  # handed to the test by stop()
            self.error = exc

    def start(self) -> None:
        """Begin placing orders."""
        self._thread.start()

    def stop(self) -> None:
        """Stop after the order in hand is accepted; re-raise what went wrong on the thread."""
        self._stop.set()
        self._thread.join(timeout=90)
        if self.error is not None:
            raise StackError(f"placing orders failed: {self.error}") from self.error

    def recovery(self, lifted_at: float, timeout: float = 120) -> float:
        """Seconds from `lifted_at` until every order accepted by then is Ready and an order
        accepted after it is Ready too."""
        before = [o for o, at in list(self.book.accepted.items()) if at <= lifted_at]

        def recovered() -> bool:
            if self.error is not None:
                raise StackError(f"placing orders failed: {self.error}")
            if any(self.book.status(o) != "Ready" for o in before):
                return False
            return self.book.ready(since=lifted_at) > 0

        poll(recovered, timeout, "orders Ready again")
        return time.time() - lifted_at


def registry_devices(api: str, key: str) -> dict[str, dict[str, Any]]:
    """The registry's view of a client's devices by id ({} while the api cannot answer)."""
    try:
        response = httpx.get(
            api + "/v1/devices",
            headers={"Authorization": f"Bearer {key}"},
            params={"limit": 1000},
            timeout=10,
        )
    except httpx.HTTPError:
        return {}
    if response.status_code != 200:
        return {}
    return {str(d["id"]): d for d in response.json()}


def queue_stats(rabbit: RabbitNode, vhost: str, queue: str) -> dict[str, int]:
    """A queue's counters: messages routed to it (publish), acked, waiting, dead-lettered."""
    info = rabbit.queue_info(vhost, queue)
    stats = info.get("message_stats", {})
    dead = rabbit.queue_info(vhost, f"{queue}.dead")
    return {
        "publish": int(stats.get("publish", 0)),
        "ack": int(stats.get("ack", 0)),
        "messages": int(info.get("messages", 0)),
        "dead": int(dead.get("messages", 0)),
    }


# --- command line --------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    """`python -m iotgw.localstack.drills render RESULTS.json DOC.md`."""
    parser = argparse.ArgumentParser(prog="iotgw-drills", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("render", help="write the results table into the doc between its markers")
    r.add_argument("results", type=Path)
    r.add_argument("doc", type=Path)
    args = parser.parse_args(argv)
    if args.command == "render":
        render_doc(args.results, args.doc)


def run_quiet(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a short command (ip, sysctl) and return its result; raise StackError on failure."""
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if result.returncode != 0:
        raise StackError(f"{' '.join(argv)}: {result.stderr.strip()}")
    return result


if __name__ == "__main__":
    main()
