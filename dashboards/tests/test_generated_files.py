"""The committed Grafana files are exactly what the code generates."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from iotgw.dashboards.catalog import DASHBOARDS
from iotgw.dashboards.cli import DEFAULT_ROOT, main
from iotgw.dashboards.provisioning import generate, stale


def test_committed_files_match_the_code() -> None:
    """Regenerate with `iotgw-dashboards` when this fails."""
    assert stale(DEFAULT_ROOT) == []
    assert main(["--check"]) == 0


def test_check_catches_an_edit_a_missing_and_an_orphan_file(tmp_path: Path) -> None:
    """A hand edit, a deleted file and a file the code no longer makes are all reported."""
    root = tmp_path / "grafana"
    shutil.copytree(DEFAULT_ROOT, root)
    assert stale(root) == []
    edited = root / "dashboards" / "iotgw-fleet.json"
    edited.write_text(edited.read_text().replace("Messages/s", "Msgs"))
    (root / "provisioning" / "datasources" / "influxdb.yaml").unlink()
    (root / "dashboards" / "old.json").write_text("{}")
    assert sorted(stale(root)) == [
        "dashboards/iotgw-fleet.json",
        "dashboards/old.json",
        "provisioning/datasources/influxdb.yaml",
    ]
    assert main(["--check", "--root", str(root)]) == 1


def test_every_dashboard_and_provisioning_file_is_generated() -> None:
    """Five dashboards with unique uids; YAML files parse; the datasource is InfluxQL."""
    files = generate()
    uids = [board.uid for board in DASHBOARDS]
    assert len(set(uids)) == 5
    for uid in uids:
        assert f"dashboards/{uid}.json" in files
    datasource = yaml.safe_load(files["provisioning/datasources/influxdb.yaml"])
    assert datasource["datasources"][0]["jsonData"]["version"] == "InfluxQL"
    rules = yaml.safe_load(files["provisioning/alerting/iotgw-rules.yaml"])
    titles = [rule["title"] for rule in rules["groups"][0]["rules"]]
    assert titles == [
        "Device offline for 5 minutes",
        "Battery under 15%",
        "Dead letters growing",
        "Ingest lag over threshold",
    ]
