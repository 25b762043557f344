"""The portal in headless Chromium against the real app (uvicorn), database and broker, with the
real provisioner (manifests target) turning the purchase into a stack: the page shows Ready.

Chromium is Debian's (/usr/bin/chromium), driven by Playwright through `executable_path`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from playwright.sync_api import Browser, Page, expect, sync_playwright
from sqlalchemy.orm import Session, sessionmaker

from iotgw.cloud_bridge.api.testing import ApiServer
from iotgw.cloud_bridge.presence.main import Presence
from iotgw.cloud_bridge.presence.testing import run_presence, service_identity
from iotgw.contracts.payloads import Status
from iotgw.contracts.topics import DeviceKind, DeviceTopic
from iotgw.localstack.pytest_plugin import Broker, InfluxDatabase
from iotgw.provisioner.app import Provisioner
from iotgw.provisioner.manifests import ManifestsTarget
from iotgw.provisioner.settings import ProvisionerSettings

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="Debian's chromium is not installed"),
    # One backend is enough here: the registry tests cover both; this one is about the browser.
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Headless Chromium (the system's, never a downloaded one)."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture
def provisioner(
    topology_broker: Broker, influx_db: InfluxDatabase, tmp_path: Path
) -> Iterator[Provisioner]:
    """The real provisioner writing each client's stack as YAML into a GitOps folder."""
    node = topology_broker.node.endpoints
    settings = ProvisionerSettings(
        amqp_url=topology_broker.amqp_url,
        rabbitmq_management_url=node.management_url,
        rabbitmq_management_user=node.username,
        rabbitmq_management_password=node.password,
        influx_url=influx_db.url,
        influx_database=influx_db.name,
        provisioner_target="manifests",
        manifests_dir=tmp_path / "manifests",
        provisioner_workers=1,
        metrics_port=0,
    )
    running = Provisioner(settings, ManifestsTarget(settings.manifests_dir))
    running.start()
    yield running
    running.close()


@pytest.fixture
def presence(sessions: sessionmaker[Session], topology_broker: Broker) -> Iterator[Presence]:
    """The presence workers, so devices that connect show up online."""
    with (
        service_identity(topology_broker) as identity,
        run_presence(topology_broker, sessions, identity) as running,
    ):
        yield running


def _sign_in(page: Page, url: str, key: str) -> None:
    page.goto(f"{url}/portal")
    expect(page).to_have_url(f"{url}/portal/login")
    page.fill("#api_key", key)
    page.click("button[type=submit]")


def _device_goes_online(broker: Broker, username: str, client_id: str, secret: str) -> mqtt.Client:
    """Connect as the device with the credentials the page showed; announce `online`."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    client.username_pw_set(broker.mqtt_username(username), secret)
    _, device = username.split(".", 1)
    topic = DeviceTopic("acme", device, DeviceKind.STATUS).mqtt
    client.will_set(topic, Status(state="offline", epoch=1, ts=time.time()).to_json(), 1, True)
    client.connect(broker.mqtt_host, broker.mqtt_port)
    client.loop_start()
    info = client.publish(topic, Status(state="online", epoch=1, ts=time.time()).to_json(), 1, True)
    info.wait_for_publish(10)
    assert info.is_published(), "the device could not publish with its page-issued secret"
    return client


def test_a_purchase_made_in_the_page_shows_ready_once_provisioned(
    api: ApiServer,
    provisioner: Provisioner,
    presence: Presence,
    browser: Browser,
    topology_broker: Broker,
    tmp_path: Path,
) -> None:
    key = api.new_client("acme")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    _sign_in(page, api.url, key)
    expect(page).to_have_url(f"{api.url}/portal")
    expect(page.locator("header .who")).to_contain_text("acme")
    expect(page.locator("#orders tbody")).to_contain_text("No orders yet.")

    page.fill("input[name=product]", "Product-A")
    page.select_option("select[name=environment]", "Production")
    page.select_option("select[name=hardware]", "Dedicated")
    page.fill("input[name=quantity]", "2")
    page.click("#buy-button")

    row = page.locator("#orders tbody tr[data-order-id]")
    expect(row).to_have_count(1)
    # The row appears at once and then follows the order over server-sent events.
    expect(row.locator(".status")).to_have_text("Ready", timeout=30_000)
    expect(page.locator("#secrets tbody tr")).to_have_count(2)
    expect(page.locator("#devices tbody tr[data-device-id]")).to_have_count(2, timeout=10_000)
    devices = page.locator("#devices tbody")
    expect(devices).to_contain_text("offline")
    expect(devices).to_contain_text("in sync v0 of v0")

    # A module connects with the credentials shown in the page (its broker user was made by the
    # provisioner); presence marks it online and the page's device list follows.
    secret_row = page.locator("#secrets tbody tr").first
    username = secret_row.locator("td").nth(1).inner_text()
    client_id = secret_row.locator("td").nth(2).inner_text()
    secret = secret_row.locator("td").nth(3).inner_text()
    module = _device_goes_online(topology_broker, username, client_id, secret)
    try:
        online = page.locator(f'#devices tr[data-device-id="{username.split(".", 1)[1]}"]')
        expect(online).to_contain_text("online", timeout=15_000)
        expect(online.locator(".dot.on")).to_have_count(1)
        page.screenshot(path=str(tmp_path / "portal.png"), full_page=True)
    finally:
        module.loop_stop()
        module.disconnect()

    order_id = row.get_attribute("data-order-id")
    with api.http(key) as http:
        order = http.get(f"/v1/orders/{order_id}").json()
    assert order["status"] == "Ready"
    assert order["environment"] == "Production"
    expect(row).to_contain_text(order["trace_id"])
    assert (tmp_path / "manifests" / "acme").is_dir(), "the provisioner wrote the stack"

    # A reload renders the same from the server (no live stream needed for a final order).
    page.reload()
    expect(page.locator("#orders tbody tr[data-order-id] .status")).to_have_text("Ready")

    # The operator's clients page lists the client with its product, hardware, status, trace.
    page.click("text=Sign out")
    operator = api.settings.operator_key
    assert operator is not None
    page.fill("#api_key", operator.get_secret_value())
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{api.url}/operator/clients")
    client_row = page.locator('#clients tr[data-client="acme"]')
    expect(client_row).to_contain_text("Product-A")
    expect(client_row).to_contain_text("Dedicated")
    expect(client_row.locator(".status")).to_have_text("Ready")
    expect(client_row).to_contain_text(order["trace_id"])
    page.screenshot(path=str(tmp_path / "clients.png"), full_page=True)
    assert errors == [], errors
