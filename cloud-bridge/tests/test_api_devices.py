"""Devices over real HTTP: desired config with If-Match, credential rotation, latest telemetry."""

from __future__ import annotations

import time

import httpx
from sqlalchemy.orm import Session, sessionmaker

from iotgw.cloud_bridge.api.settings import ApiSettings
from iotgw.cloud_bridge.api.testing import ApiServer, drain, serve_api
from iotgw.cloud_bridge.registry import repository as repo
from iotgw.contracts.credentials import verify_password_hash
from iotgw.contracts.envelope import Envelope
from iotgw.contracts.payloads import DesiredConfig, PurchaseData
from iotgw.contracts.topology import CONFIG_QUEUE, PROVISIONING_QUEUE
from iotgw.localstack.pytest_plugin import Broker, InfluxDatabase

ORDER = {
    "product": "Product-A",
    "environment": "Development",
    "archtype": "SaaS",
    "hardware": "Classic",
    "quantity": 1,
}


def _one_device(http: httpx.Client) -> dict[str, str]:
    response = http.post("/v1/orders", json=ORDER)
    assert response.status_code == 201, response.text
    device: dict[str, str] = response.json()["devices"][0]
    return device


def test_desired_config_needs_the_current_version_and_is_queued_for_delivery(
    api: ApiServer, topology_broker: Broker
) -> None:
    key = api.new_client("acme")
    with api.http(key) as http:
        device = _one_device(http)["id"]
        got = http.get(f"/v1/devices/{device}")
        assert got.headers["etag"] == '"0"'
        assert got.json()["in_sync"] is True
        url = f"/v1/devices/{device}/config"
        body = {"sampling_interval_s": 2.5, "thresholds": {"temperature": 0.5}}
        assert http.put(url, json=body).status_code == 428
        assert http.put(url, json=body, headers={"If-Match": '"7"'}).status_code == 412
        assert http.put(url, json=body, headers={"If-Match": "seven"}).status_code == 400
        bad = http.put(url, json={"sampling_interval_s": 0}, headers={"If-Match": '"0"'})
        assert bad.status_code == 422
        assert [e["field"] for e in bad.json()["errors"]] == ["sampling_interval_s"]
        ok = http.put(url, json=body, headers={"If-Match": got.headers["etag"]})
        assert ok.status_code == 200, ok.text
        assert ok.headers["etag"] == '"1"'
        assert (ok.json()["desired_version"], ok.json()["in_sync"]) == (1, False)
        stale = http.put(url, json=body, headers={"If-Match": '"0"'})
        assert stale.status_code == 412
        assert stale.headers["etag"] == '"1"'
        listed = http.get("/v1/devices").json()
        assert [d["id"] for d in listed] == [device]
    (routing_key, _, payload), *rest = drain(topology_broker.channel(), CONFIG_QUEUE)
    assert rest == []
    assert routing_key == f"config.acme.{device}.desired"
    assert DesiredConfig.model_validate_json(payload) == DesiredConfig(
        version=1, sampling_interval_s=2.5, thresholds={"temperature": 0.5}
    )
    with api.sessions.begin() as s:
        repo.record_state(s, "acme", device, 1, time.time())
    with api.http(key) as http:
        assert http.get(f"/v1/devices/{device}").json()["in_sync"] is True


def test_rotation_returns_a_new_secret_once_and_publishes_only_its_hash(
    api: ApiServer, topology_broker: Broker
) -> None:
    key = api.new_client("acme")
    with api.http(key) as http:
        first = _one_device(http)
        rotated = http.post(f"/v1/devices/{first['id']}/credentials")
        assert rotated.status_code == 200
        secret = rotated.json()["secret"]
        assert secret != first["secret"]
        assert rotated.json()["mqtt_username"] == f"acme.{first['id']}"
    with api.sessions() as s:
        stored = repo.get_device(s, "acme", first["id"])
        assert stored is not None
        assert verify_password_hash(secret, stored.password_hash)
        assert not verify_password_hash(first["secret"], stored.password_hash)
    events = drain(topology_broker.channel(), PROVISIONING_QUEUE)
    assert [rk for rk, _, _ in events] == ["purchases.acme.created", "purchases.acme.credentials"]
    body = events[1][2]
    assert secret.encode() not in body
    data = PurchaseData.model_validate(Envelope.from_json(body).data)
    assert [(d.id, d.password_hash) for d in data.devices] == [(first["id"], stored.password_hash)]


def test_latest_telemetry_comes_from_influxdb(
    sessions: sessionmaker[Session], api_settings: ApiSettings, influx_db: InfluxDatabase
) -> None:
    settings = api_settings.model_copy(
        update={"influx_url": influx_db.url, "influx_database": influx_db.name}
    )
    with serve_api(sessions, settings, workers=False) as api:
        key = api.new_client("acme")
        with api.http(key) as http:
            device = _one_device(http)["id"]
            assert http.get(f"/v1/devices/{device}/telemetry/latest").status_code == 404
            series = f"telemetry,client=acme,device={device}"
            lines = "\n".join(
                [
                    f"{series} temperature=20.5,seq=1i 1700000000000000000",
                    f"{series} temperature=21.5,seq=2i 1700000001000000000",
                    "telemetry,client=other,device=x temperature=99,seq=3i 1700000002000000000",
                ]
            )
            written = httpx.post(
                f"{influx_db.url}/write", params={"db": influx_db.name}, content=lines
            )
            assert written.status_code == 204
            latest = http.get(f"/v1/devices/{device}/telemetry/latest")
    assert latest.status_code == 200, latest.text
    assert latest.json()["metrics"] == {"temperature": 21.5, "seq": 2}
    assert latest.json()["time"].startswith("2023-11-14T22:13:21")


def test_latest_telemetry_answers_503_when_influxdb_is_unreachable(api: ApiServer) -> None:
    key = api.new_client("acme")
    with api.http(key) as http:
        device = _one_device(http)["id"]
        response = http.get(f"/v1/devices/{device}/telemetry/latest")
    assert response.status_code == 503
