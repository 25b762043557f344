"""Smoke run of the whole-pipeline benchmark (`bench/bench_pipeline.py --quick`), under --slow.

It starts its own RabbitMQ node, InfluxDB, iotgw-ingest and iotgw-sim on free ports, so it
needs no fixture; it takes about a minute on 2 cores.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_quick_run_prints_figures_plots_and_ratios_last(tmp_path: Path) -> None:
    """Every step connects all its modules, keeps up, is measured; plots exist; ratios last."""
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "bench_pipeline.py"),
            "--quick",
            "--img-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    summary = lines[-1]
    assert summary["summary"] == "bench_pipeline"

    steps = [line for line in lines if line.get("figure") == "pipeline_step"]
    assert [s["modules"] for s in steps] == summary["modules"]
    for step in steps:
        assert step["connected"] == step["modules"]
        assert step["latency_samples"] > 0
        assert 0 < step["p50_ms"] <= step["p99_ms"]
        assert step["broker_kib_per_device"] > 0
        assert step["sim_kib_per_device"] > 0
        # Paced below capacity, what the modules offer is what reaches InfluxDB.
        assert step["end_to_end_msg_s"] >= 0.8 * step["offered_msg_s"]

    assert summary["broker_limit_msg_s"] > 0
    assert summary["database_limit_points_s"] > 0
    assert 0 < summary["ratio_end_to_end_vs_min_baseline"] <= 1.5
    assert summary["saturated_end_to_end_msg_s"] > max(s["end_to_end_msg_s"] for s in steps)
    for name in ("pipeline_rate.png", "pipeline_latency.png", "pipeline_memory.png"):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")
