"""Serve the api in-process on a free loopback port: for tests and benchmarks (real HTTP)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pika
import uvicorn
from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from iotgw.cloud_bridge.api.app import create_app
from iotgw.cloud_bridge.api.main import Workers
from iotgw.cloud_bridge.api.metrics import ApiMetrics
from iotgw.cloud_bridge.api.settings import ApiSettings


@dataclass
class ApiServer:
    """The api served by uvicorn on a free port, with its relay and status consumer."""

    url: str
    sessions: sessionmaker[Session]
    settings: ApiSettings
    workers: Workers
    app: FastAPI

    def http(self, key: str | None = None) -> httpx.Client:
        """An HTTP client, authenticated with `key` when given."""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def new_client(self, name: str) -> str:
        """Register client `name` through the operator endpoint; its API key."""
        operator = self.settings.operator_key
        assert operator is not None, "serve the api with an operator key to create clients"
        with self.http(operator.get_secret_value()) as http:
            response = http.post("/v1/operator/clients", json={"name": name})
        if response.status_code != 201:
            raise RuntimeError(f"creating client {name}: {response.status_code} {response.text}")
        key: str = response.json()["api_key"]
        return key


def free_port() -> int:
    """A port the kernel reports free on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def serve_api(
    sessions: sessionmaker[Session],
    settings: ApiSettings,
    *,
    workers: bool = True,
    customize: Callable[[FastAPI], None] | None = None,
) -> Iterator[ApiServer]:
    """Run the app with uvicorn in a thread until the block ends (plus relay and consumer)."""
    metrics = ApiMetrics()
    background = Workers.build(settings, sessions, metrics, relay=workers, consumer=workers)
    app = create_app(settings, sessions, metrics=metrics, outbox_written=background.wake_relay)
    if customize is not None:
        customize(app)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=2,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    background.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            background.stop()
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield ApiServer(f"http://127.0.0.1:{port}", sessions, settings, background, app)
    finally:
        server.should_exit = True
        thread.join(10)
        background.stop()


def drain(
    channel: pika.adapters.blocking_connection.BlockingChannel,
    queue: str,
    idle: float = 1.5,
    timeout: float = 30,
) -> list[tuple[str, pika.BasicProperties, bytes]]:
    """Ack and return every message on `queue` until none arrives for `idle` s."""
    got = []
    deadline = time.monotonic() + timeout
    for method, properties, body in channel.consume(queue, inactivity_timeout=idle):
        if method is None or time.monotonic() > deadline:
            break
        got.append((str(method.routing_key), properties, body))
        channel.basic_ack(method.delivery_tag)
    channel.cancel()
    return got


def wait_for(check: Callable[[], bool], timeout: float = 20, what: str = "condition") -> None:
    """Poll `check` until true; AssertionError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
