"""The manifests folder and InfluxDB storage: idempotent, and removable again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from iotgw.localstack.pytest_plugin import InfluxDatabase
from iotgw.provisioner.brokerusers import BrokerUsers
from iotgw.provisioner.catalog import load_catalog
from iotgw.provisioner.errors import TransientError
from iotgw.provisioner.influx import InfluxStore
from iotgw.provisioner.manifests import ManifestsTarget
from iotgw.provisioner.render import render_stack
from iotgw.provisioner.request import StackSpec


def stack(product: str = "Product-A") -> list[dict[str, Any]]:
    spec = StackSpec("acme", product, "Development", "Classic", "trace-1")
    return render_stack(spec, load_catalog(), "iotgw")


def test_manifests_are_written_once_and_listed_in_a_kustomization(tmp_path: Path) -> None:
    target = ManifestsTarget(tmp_path)
    objects = stack()
    target.apply("acme", objects)
    folder = tmp_path / "acme"
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    files = kustomization["resources"]
    assert len(files) == len(objects)
    assert [yaml.safe_load((folder / f).read_text()) for f in files] == objects
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    target.apply("acme", stack())
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before


def test_a_changed_product_replaces_the_old_workload_files(tmp_path: Path) -> None:
    target = ManifestsTarget(tmp_path)
    target.apply("acme", stack("Product-A"))
    target.apply("acme", stack("Product-C"))
    names = sorted(p.name for p in (tmp_path / "acme").iterdir())
    assert not [n for n in names if "product-a" in n]
    assert "06-deployment-product-c.yaml" in names
    assert target.remove("acme") == ["Namespace/acme"]
    assert not (tmp_path / "acme").exists()
    assert target.remove("acme") == []


@pytest.mark.parametrize("client", ["../etc", "acme/../../x", ".", ""])
def test_the_folder_never_leaves_the_root(tmp_path: Path, client: str) -> None:
    with pytest.raises(ValueError, match="client"):
        ManifestsTarget(tmp_path).apply(client, stack())
    assert list(tmp_path.iterdir()) == []


def test_storage_is_ensured_idempotently_and_follows_the_setting(influx_db: InfluxDatabase) -> None:
    store = InfluxStore(influx_db.url, influx_db.name, "iotgw", "30d")
    store.ensure_storage()
    store.ensure_storage()
    InfluxStore(influx_db.url, influx_db.name, "iotgw", "14d").ensure_storage()
    result: Any = influx_db.node.query(f'SHOW RETENTION POLICIES ON "{influx_db.name}"')
    columns, rows = (
        result["results"][0]["series"][0]["columns"],
        result["results"][0]["series"][0]["values"],
    )
    policies = {r[0]: dict(zip(columns, r, strict=True)) for r in rows}
    assert policies["iotgw"]["duration"] == "336h0m0s"
    assert policies["iotgw"]["default"] is True


def test_dropping_a_client_without_any_data_is_harmless(influx_db: InfluxDatabase) -> None:
    assert InfluxStore(influx_db.url, "never_created", "iotgw", "30d").drop_client("acme") == []
    store = InfluxStore(influx_db.url, influx_db.name, "iotgw", "30d")
    store.ensure_storage()
    assert store.drop_client("acme") == ["Series/client=acme"]


def test_unreachable_services_are_transient() -> None:
    with pytest.raises(TransientError):
        InfluxStore("http://127.0.0.1:9", "x", "iotgw", "30d", timeout=2).ensure_storage()
    users = BrokerUsers("http://127.0.0.1:9", "/", "guest", "guest", timeout=2)
    with pytest.raises(TransientError):
        users.client_users("acme")
